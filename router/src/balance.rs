//! The balance report: how far each member's ownership is from its fair
//! share, measured on the hash space and on a sample of keys.

use serde::Serialize;

use crate::id::MemberId;
use crate::placement::{fair_points, RING_POINTS};
use crate::ring::{MemberIndex, Ring};

/// The most keys [`Ring::balance_with_keys`] will hash, so a report stays
/// quick whatever the caller asks for.
pub const MAX_SAMPLE_KEYS: u64 = 10_000_000;

/// One member's line of a [`BalanceReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberBalance {
    /// The member.
    pub member: MemberId,
    /// Its weight.
    pub weight: u32,
    /// Its token count.
    pub tokens: usize,
    /// The fraction of the hash space it owns.
    pub share: f64,
    /// `weight / total weight`.
    pub fair_share: f64,
    /// `share / fair_share`; 1.0 is perfect.
    pub ratio: f64,
    /// The fraction of sampled keys it owns, when keys were sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_share: Option<f64>,
}

/// Balance measured on a sample of keys `key:0`, `key:1`, ...
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyBalance {
    /// How many keys were hashed.
    pub sample_keys: u64,
    /// The largest `key_share / fair_share`.
    pub max_over_mean: f64,
    /// The standard deviation of `key_share / fair_share`.
    pub stddev: f64,
}

/// How evenly a ring spreads the hash space over its members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceReport {
    /// One line per member, in ring order.
    pub members: Vec<MemberBalance>,
    /// The largest `share / fair_share`: the load of the busiest member
    /// relative to a perfect ring. 1.0 is perfect.
    pub max_over_mean: f64,
    /// The population standard deviation of `share / fair_share`.
    pub stddev: f64,
    /// The same measured on sampled keys, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyBalance>,
}

/// The maximum and population standard deviation of `ratios`.
fn max_and_stddev(ratios: &[f64]) -> (f64, f64) {
    let count = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / count;
    let variance = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / count;
    let max = ratios.iter().copied().fold(f64::MIN, f64::max);
    (max, variance.sqrt())
}

impl Ring {
    /// The balance of the hash space.
    pub fn balance(&self) -> BalanceReport {
        self.balance_with_keys(0)
    }

    /// The balance of the hash space, and of `sample_keys` keys `key:0`,
    /// `key:1`, ... (capped at [`MAX_SAMPLE_KEYS`]; 0 skips the sample).
    pub fn balance_with_keys(&self, sample_keys: u64) -> BalanceReport {
        let sample_keys = sample_keys.min(MAX_SAMPLE_KEYS);
        let weights: Vec<u32> = self.members().iter().map(|m| m.weight).collect();
        let fair = fair_points(&weights);
        let owned = self.owned_points();
        let mut key_counts = vec![0_u64; weights.len()];
        let mut key = String::new();
        for i in 0..sample_keys {
            key.clear();
            use std::fmt::Write;
            let _ = write!(key, "key:{i}");
            key_counts[self.owner_of_key(key.as_bytes()).get()] += 1;
        }
        let members: Vec<MemberBalance> = self
            .members()
            .iter()
            .enumerate()
            .map(|(index, member)| {
                let share = owned[index] as f64 / RING_POINTS as f64;
                let fair_share = fair[index] as f64 / RING_POINTS as f64;
                MemberBalance {
                    member: member.id.clone(),
                    weight: member.weight,
                    tokens: member.tokens,
                    share,
                    fair_share,
                    ratio: share / fair_share,
                    key_share: (sample_keys > 0).then(|| key_counts[index] as f64 / sample_keys as f64),
                }
            })
            .collect();
        let ratios: Vec<f64> = members.iter().map(|m| m.ratio).collect();
        let (max_over_mean, stddev) = max_and_stddev(&ratios);
        let keys = (sample_keys > 0).then(|| {
            let ratios: Vec<f64> = members.iter().map(|m| m.key_share.unwrap_or(0.0) / m.fair_share).collect();
            let (max_over_mean, stddev) = max_and_stddev(&ratios);
            KeyBalance { sample_keys, max_over_mean, stddev }
        });
        BalanceReport { members, max_over_mean, stddev, keys }
    }

    /// How many of the 2^64 hashes `member` owns.
    pub fn owned_points_of(&self, member: MemberIndex) -> u128 {
        self.owned_points()[member.get()]
    }
}
