//! Key generators: which key id each request names.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Zipf};

/// How key ids are drawn from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyPattern {
    Uniform,
    /// Normal around the middle, standard deviation a sixth of the range
    /// (memtier's `G`), clamped to the range.
    Gaussian,
    /// Rank r (1 = hottest) is key `min + r - 1`, drawn with probability
    /// proportional to 1 / r^exponent.
    Zipf {
        exponent: f64,
    },
    /// min, min+1, ..., max, min, ... per generator.
    Sequential,
}

impl std::str::FromStr for KeyPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "uniform" | "r" | "random" => KeyPattern::Uniform,
            "gaussian" | "g" => KeyPattern::Gaussian,
            "sequential" | "s" => KeyPattern::Sequential,
            "zipf" => KeyPattern::Zipf { exponent: 0.99 },
            other => match other.strip_prefix("zipf:") {
                Some(e) => {
                    let exponent: f64 = e.parse().map_err(|_| format!("bad zipf exponent {e:?}"))?;
                    if !(exponent > 0.0 && exponent.is_finite()) {
                        return Err(format!("zipf exponent must be positive, not {exponent}"));
                    }
                    KeyPattern::Zipf { exponent }
                }
                None => {
                    return Err(format!("unknown key pattern {s:?}: uniform, gaussian, zipf[:EXPONENT], sequential"))
                }
            },
        })
    }
}

impl std::fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPattern::Uniform => write!(f, "uniform"),
            KeyPattern::Gaussian => write!(f, "gaussian"),
            KeyPattern::Zipf { exponent } => write!(f, "zipf:{exponent}"),
            KeyPattern::Sequential => write!(f, "sequential"),
        }
    }
}

/// Draws key ids.
#[derive(Debug)]
pub struct KeyGen {
    min: u64,
    max: u64,
    pattern: KeyPattern,
    rng: SmallRng,
    next_seq: u64,
    zipf: Option<Zipf<f64>>,
    normal: Option<Normal<f64>>,
}

impl KeyGen {
    pub fn new(min: u64, max: u64, pattern: KeyPattern, seed: u64) -> Result<KeyGen, String> {
        if min > max {
            return Err(format!("key minimum {min} is above the maximum {max}"));
        }
        let n = (max - min + 1) as f64;
        let zipf = match pattern {
            KeyPattern::Zipf { exponent } => Some(Zipf::new(n, exponent).map_err(|e| e.to_string())?),
            _ => None,
        };
        let normal = match pattern {
            KeyPattern::Gaussian => {
                Some(Normal::new((min as f64 + max as f64) / 2.0, (n / 6.0).max(1.0)).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        Ok(KeyGen { min, max, pattern, rng: SmallRng::seed_from_u64(seed), next_seq: min, zipf, normal })
    }

    pub fn next_id(&mut self) -> u64 {
        match self.pattern {
            KeyPattern::Uniform => self.rng.random_range(self.min..=self.max),
            KeyPattern::Sequential => {
                let id = self.next_seq;
                self.next_seq = if id >= self.max { self.min } else { id + 1 };
                id
            }
            KeyPattern::Gaussian => {
                let x = self.normal.as_ref().map_or(self.min as f64, |d| d.sample(&mut self.rng));
                (x.round().max(self.min as f64) as u64).min(self.max)
            }
            KeyPattern::Zipf { .. } => {
                let rank = self.zipf.as_ref().map_or(1.0, |d| d.sample(&mut self.rng));
                (self.min + rank as u64 - 1).min(self.max)
            }
        }
    }

    /// A value in `lo..=hi` from this generator's stream.
    pub fn size_in(&mut self, lo: usize, hi: usize) -> usize {
        if lo >= hi {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_covers_the_range_evenly() {
        let mut g = KeyGen::new(10, 19, KeyPattern::Uniform, 1).unwrap();
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let id = g.next_id();
            assert!((10..=19).contains(&id));
            counts[(id - 10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn sequential_wraps() {
        let mut g = KeyGen::new(5, 7, KeyPattern::Sequential, 1).unwrap();
        let ids: Vec<u64> = (0..7).map(|_| g.next_id()).collect();
        assert_eq!(ids, vec![5, 6, 7, 5, 6, 7, 5]);
    }

    #[test]
    fn zipf_frequencies_follow_the_power_law() {
        // For zipf(s), frequency(rank) ~ rank^-s: the log-log slope between
        // ranks 1..=10 and 100..=1000 must be about -s.
        let exponent = 0.99;
        let mut g = KeyGen::new(1, 100_000, KeyPattern::Zipf { exponent }, 7).unwrap();
        let mut counts = vec![0u64; 100_001];
        let draws = 2_000_000;
        for _ in 0..draws {
            counts[g.next_id() as usize] += 1;
        }
        let freq = |r: usize| counts[r] as f64 / draws as f64;
        let slope = (freq(10).ln() - freq(1).ln()) / (10f64.ln() - 1f64.ln());
        assert!((slope + exponent).abs() < 0.1, "slope {slope} for exponent {exponent}");
        // The hottest key is drawn about 1/H(n,s) of the time.
        let h: f64 = (1..=100_000).map(|r| (r as f64).powf(-exponent)).sum();
        assert!((freq(1) - 1.0 / h).abs() < 0.01, "top key {} vs {}", freq(1), 1.0 / h);
    }

    #[test]
    fn gaussian_centres_on_the_middle() {
        let mut g = KeyGen::new(0, 5999, KeyPattern::Gaussian, 3).unwrap();
        let n = 100_000;
        let within_one_sigma = (0..n).map(|_| g.next_id()).filter(|&id| (2000..=4000).contains(&id)).count();
        let share = within_one_sigma as f64 / n as f64;
        assert!((0.66..0.70).contains(&share), "share within one sigma {share}");
    }

    #[test]
    fn patterns_parse() {
        assert_eq!("zipf:1.2".parse::<KeyPattern>(), Ok(KeyPattern::Zipf { exponent: 1.2 }));
        assert_eq!("R".parse::<KeyPattern>(), Ok(KeyPattern::Uniform));
        assert!("zipf:-1".parse::<KeyPattern>().is_err());
        assert!("nope".parse::<KeyPattern>().is_err());
    }
}
