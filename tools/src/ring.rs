//! `ringkv ring`: plan and edit ring descriptions offline, before or beside a
//! running cluster.
//!
//! Every subcommand follows the same steps: read the ring file(s), compute
//! with the `router` library, then either print (`show`, `plan`) or save the
//! changed description atomically with its epoch raised (`init`, `add`,
//! `remove`, `weight`). Any error is reported as one line on stderr with a
//! non-zero exit, before anything is written, so the file is left as it was.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use router::{plan, BalanceReport, InitConfig, MemberId, NodeId, Placement, Ring, RingDescription};
use serde::Serialize;

/// Arguments of `ringkv ring`.
#[derive(Debug, clap::Args)]
pub struct RingArgs {
    #[command(subcommand)]
    command: RingCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RingCommand {
    /// Create a ring file with evenly balanced tokens (epoch 1).
    Init(InitArgs),
    /// Add a node and its shards; data moves only to the new shards.
    Add(AddArgs),
    /// Remove a node and its shards; only their ranges move.
    Remove(RemoveArgs),
    /// Change one member's weight.
    Weight(WeightArgs),
    /// Print the members and how evenly they share the hash space.
    Show(ShowArgs),
    /// Print the hash ranges that change owner between two ring files.
    Plan(PlanArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The ring file to create.
    #[arg(long)]
    file: PathBuf,
    /// A node as ID=HOST:PORT; repeat for each node.
    #[arg(long = "node", value_name = "ID=ADDR", required = true, value_parser = parse_node)]
    nodes: Vec<(NodeId, String)>,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    shards_per_node: u32,
    /// Tokens per member of weight 1.
    #[arg(long, default_value_t = 256)]
    tokens: u32,
    /// Token placement algorithm.
    #[arg(long, value_enum, default_value_t = PlacementArg::Balanced)]
    placement: PlacementArg,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PlacementArg {
    /// Exact fair shares (the default).
    Balanced,
    /// Hashed tokens, as in Ketama; for comparison.
    Ketama,
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// The ring file to change.
    #[arg(long)]
    file: PathBuf,
    /// The new node as ID=HOST:PORT.
    #[arg(long, value_name = "ID=ADDR", value_parser = parse_node)]
    node: (NodeId, String),
    /// The weight of each of the node's shards.
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Shards on the node; the ring's shards_per_node by default.
    #[arg(long)]
    shards: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct RemoveArgs {
    /// The ring file to change.
    #[arg(long)]
    file: PathBuf,
    /// The node to remove.
    #[arg(long)]
    node: NodeId,
}

#[derive(Debug, clap::Args)]
struct WeightArgs {
    /// The ring file to change.
    #[arg(long)]
    file: PathBuf,
    /// The member as NODE/SHARD, for example n1/0.
    #[arg(long)]
    member: MemberId,
    /// The new weight.
    #[arg(long)]
    weight: u32,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The ring file to read.
    #[arg(long)]
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure balance on this many keys `key:0`, `key:1`, ... (0 to
    /// skip).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The ring file in force now.
    #[arg(long)]
    from: PathBuf,
    /// The ring file to move to.
    #[arg(long)]
    to: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Ranges listed in the table (the first, in ring order); `--json`
    /// always lists them all.
    #[arg(long, default_value_t = PLAN_RANGES_SHOWN_DEFAULT, value_name = "N")]
    ranges: usize,
}

/// Ranges `ring plan` lists by default: a join to a ring of 100 members
/// of 256 tokens each moves some 25,000 ranges, too many to read.
const PLAN_RANGES_SHOWN_DEFAULT: usize = 20;

fn parse_node(text: &str) -> Result<(NodeId, String), String> {
    let (id, address) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    if address.trim().is_empty() {
        return Err(format!("node {id:?} has an empty address"));
    }
    let id = NodeId::new(id).map_err(|e| e.to_string())?;
    Ok((id, address.to_owned()))
}

/// Runs `ringkv ring`.
pub fn run(args: RingArgs) -> ExitCode {
    let result = match args.command {
        RingCommand::Init(args) => init(args),
        RingCommand::Add(args) => edit(&args.file, |ring| {
            let (id, address) = args.node.clone();
            ring.add_node(id, address, args.shards, args.weight)
        }),
        RingCommand::Remove(args) => edit(&args.file, |ring| ring.remove_node(&args.node)),
        RingCommand::Weight(args) => edit(&args.file, |ring| ring.set_weight(&args.member, args.weight)),
        RingCommand::Show(args) => show(&args),
        RingCommand::Plan(args) => plan_command(&args),
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            // One line, so scripts can log it as it is.
            eprintln!("error: {}", reason.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn init(args: InitArgs) -> Result<String, String> {
    if args.file.exists() && !args.force {
        return Err(format!("{} already exists; pass --force to overwrite it", args.file.display()));
    }
    let config = InitConfig {
        nodes: args.nodes,
        shards_per_node: args.shards_per_node,
        tokens_per_weight: args.tokens,
        placement: match args.placement {
            PlacementArg::Balanced => Placement::Balanced,
            PlacementArg::Ketama => Placement::Ketama,
        },
    };
    let mut description = RingDescription::init(&config).map_err(|e| e.to_string())?;
    // Over an existing ring (`--force`), the new one is still its
    // successor: its epoch goes past the old one's, so that nothing that
    // knew the old ring takes the new one for an older one (it was reset
    // to 1).
    if args.file.exists() {
        if let Ok(old) = RingDescription::load(&args.file) {
            description.epoch = old.epoch.saturating_add(1).min(router::MAX_EPOCH);
        }
    }
    description.save(&args.file).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} at epoch {} with {} members\n",
        args.file.display(),
        description.epoch,
        description.shards.len()
    ))
}

/// Loads `file`, applies `change`, and saves the result with the epoch
/// raised. Nothing is written unless every step succeeds.
fn edit(
    file: &Path,
    change: impl FnOnce(&RingDescription) -> Result<RingDescription, router::ChangeError>,
) -> Result<String, String> {
    // One edit at a time: an exclusive lock on `<file>.lock`, held from the
    // first read to the save (two edits that both read epoch N both wrote
    // N+1 over each other, and one change was lost). The lock file is
    // never renamed, unlike the ring file, which `save` replaces.
    let lock_path = {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        file.with_file_name(name)
    };
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; the lock goes with it.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("lock {}: {}", lock_path.display(), std::io::Error::last_os_error()));
        }
    }
    let current = RingDescription::load(file).map_err(|e| e.to_string())?;
    let old = Ring::new(current.clone()).map_err(|e| e.to_string())?;
    let next = change(&current).map_err(|e| e.to_string())?;
    next.check_successor_of(&current).map_err(|e| e.to_string())?;
    let new = Ring::new(next.clone()).map_err(|e| e.to_string())?;
    let moved = plan(&old, &new).moved_fraction;
    // Someone may have changed the file without taking the lock (an
    // editor); writing over their change would lose it, so re-read and
    // refuse instead.
    let on_disk = RingDescription::load(file).map_err(|e| e.to_string())?;
    next.check_successor_of(&on_disk)
        .map_err(|e| format!("{} changed while it was being edited: {e}", file.display()))?;
    next.save(file).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} at epoch {}: {} members, {:.4}% of the hash space moves, max/mean {:.6}\n",
        file.display(),
        next.epoch,
        next.shards.len(),
        moved * 100.0,
        new.balance().max_over_mean
    ))
}

fn load_ring(file: &Path) -> Result<Ring, String> {
    let description = RingDescription::load(file).map_err(|e| e.to_string())?;
    Ring::new(description).map_err(|e| e.to_string())
}

/// The JSON object printed by `ring show --json`; see docs/ring.md.
#[derive(Debug, Serialize)]
struct ShowJson<'a> {
    epoch: u64,
    placement: Placement,
    tokens_per_weight: u32,
    shards_per_node: u32,
    token_count: usize,
    nodes: &'a [router::NodeEntry],
    members: Vec<MemberJson<'a>>,
    max_over_mean: f64,
    stddev: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<&'a router::KeyBalance>,
}

#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    #[serde(flatten)]
    balance: &'a router::MemberBalance,
    node: &'a NodeId,
    address: &'a str,
}

fn show(args: &ShowArgs) -> Result<String, String> {
    let ring = load_ring(&args.file)?;
    let report = ring.balance_with_keys(args.keys);
    if args.json {
        let members = report
            .members
            .iter()
            .zip(ring.members())
            .map(|(balance, member)| MemberJson {
                balance,
                node: &ring.node(member.node).id,
                address: &ring.node(member.node).address,
            })
            .collect();
        let json = ShowJson {
            epoch: ring.epoch(),
            placement: ring.description().placement,
            tokens_per_weight: ring.description().tokens_per_weight,
            shards_per_node: ring.description().shards_per_node,
            token_count: ring.token_count(),
            nodes: &ring.description().nodes,
            members,
            max_over_mean: report.max_over_mean,
            stddev: report.stddev,
            keys: report.keys.as_ref(),
        };
        return serde_json::to_string(&json).map(|text| text + "\n").map_err(|e| e.to_string());
    }
    Ok(show_table(&ring, &report))
}

fn percent(fraction: f64) -> String {
    format!("{:.4}%", fraction * 100.0)
}

fn show_table(ring: &Ring, report: &BalanceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ring epoch {}, placement {}, {} members on {} nodes, {} tokens",
        ring.epoch(),
        ring.description().placement,
        ring.members().len(),
        ring.nodes().len(),
        ring.token_count()
    );
    let mut header = vec!["member", "address", "weight", "tokens", "share", "fair", "ratio"];
    if report.keys.is_some() {
        header.push("keys");
    }
    let rows: Vec<Vec<String>> = report
        .members
        .iter()
        .zip(ring.members())
        .map(|(balance, member)| {
            let mut row = vec![
                balance.member.to_string(),
                ring.node(member.node).address.clone(),
                balance.weight.to_string(),
                balance.tokens.to_string(),
                percent(balance.share),
                percent(balance.fair_share),
                format!("{:.6}", balance.ratio),
            ];
            if let Some(key_share) = balance.key_share {
                row.push(percent(key_share));
            }
            row
        })
        .collect();
    out.push_str(&table(&header, &rows));
    let _ = write!(out, "max/mean {:.6}, stddev {:.6}", report.max_over_mean, report.stddev);
    if let Some(keys) = &report.keys {
        let _ = write!(
            out,
            "; on {} keys: max/mean {:.6}, stddev {:.6}",
            keys.sample_keys, keys.max_over_mean, keys.stddev
        );
    }
    out.push('\n');
    out
}

/// Formats rows as a table: text columns left-aligned, the rest right.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|column| {
            rows.iter().all(|row| row.get(column).is_some_and(|cell| cell.trim_end_matches('%').parse::<f64>().is_ok()))
                && !rows.is_empty()
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (column, cell) in cells.enumerate() {
            if column > 0 {
                text.push_str("  ");
            }
            let width = widths[column];
            if numeric[column] {
                let _ = write!(text, "{cell:>width$}");
            } else {
                let _ = write!(text, "{cell:<width$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The JSON object printed by `ring plan --json`; see docs/ring.md.
#[derive(Debug, Serialize)]
struct PlanJson {
    from_epoch: u64,
    to_epoch: u64,
    moved_fraction: f64,
    moves: Vec<MoveJson>,
    transfers: Vec<router::Transfer>,
}

#[derive(Debug, Serialize)]
struct MoveJson {
    start: router::Token,
    end: router::Token,
    from: MemberId,
    to: MemberId,
    fraction: f64,
}

fn plan_command(args: &PlanArgs) -> Result<String, String> {
    let old = load_ring(&args.from)?;
    let new = load_ring(&args.to)?;
    if new.epoch() < old.epoch() {
        return Err(format!(
            "{} (epoch {}) is older than {} (epoch {}); swap --from and --to",
            args.to.display(),
            new.epoch(),
            args.from.display(),
            old.epoch()
        ));
    }
    let plan = plan(&old, &new);
    if args.json {
        let json = PlanJson {
            from_epoch: plan.from_epoch,
            to_epoch: plan.to_epoch,
            moved_fraction: plan.moved_fraction,
            moves: plan
                .moves
                .iter()
                .map(|m| MoveJson {
                    start: m.range.start,
                    end: m.range.end,
                    from: m.from.clone(),
                    to: m.to.clone(),
                    fraction: m.range.fraction(),
                })
                .collect(),
            transfers: plan.transfers(),
        };
        return serde_json::to_string(&json).map(|text| text + "\n").map_err(|e| e.to_string());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan epoch {} -> {}: {} of the hash space moves in {} ranges",
        plan.from_epoch,
        plan.to_epoch,
        percent(plan.moved_fraction),
        plan.moves.len()
    );
    if !plan.moves.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .transfers()
            .into_iter()
            .map(|t| vec![t.from.to_string(), t.to.to_string(), percent(t.fraction), t.ranges.to_string()])
            .collect();
        out.push_str(&table(&["from", "to", "moved", "ranges"], &rows));
        let shown = plan.moves.len().min(args.ranges);
        let rows: Vec<Vec<String>> = plan.moves[..shown]
            .iter()
            .map(|m| {
                vec![
                    m.range.start.to_string(),
                    m.range.end.to_string(),
                    m.from.to_string(),
                    m.to.to_string(),
                    percent(m.range.fraction()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&table(&["after", "up to", "from", "to", "share"], &rows));
        }
        if shown < plan.moves.len() {
            let _ =
                writeln!(out, "... {} more ranges (--ranges N lists more, --json lists all)", plan.moves.len() - shown);
        }
    }
    Ok(out)
}
