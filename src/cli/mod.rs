//! The command line: argument parsing, terminal output and exit codes. Each command
//! parses its flags and calls into `ops`; the only logic here is presentation.
//!
//! Exit codes, as Terraform: 0 success (no changes), 1 error (usage errors included),
//! 2 changes present (with `--detailed-exitcode`, or drift found by `anvil drift`).

mod output;
mod reconcile;
mod sim_bosh;

use crate::apply::{ApplyConfig, Event};
use crate::ops::{self, Inputs, OpsError, Workspace};
use crate::plan::json::PlanDocument;
use crate::plan::{render, Plan, PlanOptions};
use crate::providers::Registry;
use crate::state::{self, State};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Parser, Debug)]
#[command(
    name = "anvil",
    version,
    about = "Declarative plan-and-apply for Cloud Foundry service foundations and the cloud under them"
)]
pub struct Cli {
    /// State backend URL (default: state/<metadata.name>.json). `file://PATH` or a path.
    #[arg(long, global = true, env = "ANVIL_STATE")]
    state: Option<String>,
    /// Never colour the output (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    no_color: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check spec files without touching state or the real world.
    Validate(SpecArgs),
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make the real world match the spec (PATH), or apply a saved plan (PLANFILE).
    Apply(ApplyCmdArgs),
    /// Report what changed outside anvil and what differs from the spec (exit 2 on drift).
    Drift(DriftArgs),
    /// Adopt an existing object into state: anvil import ADDR ID [PATH].
    Import(ImportArgs),
    /// Destroy everything the workspace manages.
    Destroy(ApplyArgs),
    /// Show the state, or a saved plan.
    Show(ShowArgs),
    /// Inspect and edit the state.
    #[command(subcommand)]
    State(StateCmd),
    /// Print the resource graph.
    Graph(GraphArgs),
    /// Print the JSON Schema of a spec kind (`resources`), the plan (`plan`) or the drift report (`drift`).
    Schema { kind: String },
    /// Remove a stuck lock (see the lock's id in the error that names its holder).
    ForceUnlock {
        id: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Run a simulator of a service anvil manages (for tests, demos and CI).
    #[command(subcommand)]
    Sim(SimCmd),
    /// Bring Blacksmith's Vault index back into agreement with the Director's deployments.
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(Args, Debug, Clone)]
struct SpecArgs {
    /// Spec files or directories (default: the current directory).
    paths: Vec<PathBuf>,
    /// Set a variable: --var NAME=VALUE (repeatable).
    #[arg(long = "var")]
    vars: Vec<String>,
    /// Read variables from a YAML or JSON file (repeatable).
    #[arg(long = "var-file")]
    var_files: Vec<PathBuf>,
    /// List the YAML files a directory scan skipped because they hold no anvil document.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args, Debug, Clone)]
struct PlanFlags {
    /// Plan only these addresses and what they depend on.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Leave these addresses and what depends on them out.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Replace these resources even if nothing changed.
    #[arg(long = "replace")]
    replace: Vec<String>,
    /// Read the real objects before planning (--refresh=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    refresh: bool,
    /// Operations at once (refresh and apply).
    #[arg(long, default_value_t = 10)]
    parallelism: usize,
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    flags: PlanFlags,
    /// Plan the destruction of everything.
    #[arg(long)]
    destroy: bool,
    /// Save the plan to FILE for `anvil apply FILE`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the plan as JSON (schemas/plan.schema.json).
    #[arg(long)]
    json: bool,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
}

/// What `apply` and `destroy` share; `destroy` is `apply` of a destroy plan.
#[derive(Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    flags: PlanFlags,
    /// Apply without asking (required without a terminal).
    #[arg(long)]
    auto_approve: bool,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

#[derive(Args, Debug)]
struct ApplyCmdArgs {
    #[command(flatten)]
    common: ApplyArgs,
    /// Accept the real world into state (record changes made outside anvil) without
    /// changing anything in it.
    #[arg(long)]
    refresh_only: bool,
}

#[derive(Args, Debug)]
struct DriftArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    flags: PlanFlags,
    /// Print the report as JSON (schemas/drift.schema.json).
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown (for a CI job summary or a pull-request comment).
    #[arg(long)]
    markdown: bool,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The address in the spec to adopt the object as, e.g. bosh_deployment.redis.
    address: String,
    /// The object's ID: bosh_deployment NAME; bosh_config TYPE[/NAME]; vault_secret
    /// [MOUNT:]PATH; vault_index_entry [MOUNT:]PATH#KEY; null_resource any id.
    id: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// A saved plan file; without it, the state of the workspace in the current directory.
    planfile: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum StateCmd {
    /// List recorded addresses.
    List {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Show one recorded resource.
    Show {
        address: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Forget resources (the real objects are kept).
    Rm {
        #[arg(required = true)]
        addresses: Vec<String>,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        #[arg(long = "path", default_value = ".")]
        path: PathBuf,
    },
    /// Move a record to another address.
    Mv {
        source: String,
        destination: String,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        #[arg(long = "path", default_value = ".")]
        path: PathBuf,
    },
}

#[derive(Args, Debug)]
struct GraphArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[arg(long, default_value = "dot", value_parser = ["dot", "json"])]
    format: String,
}

// ---- `anvil sim vault` ----

#[derive(Subcommand, Debug)]
enum SimCmd {
    /// A BOSH Director API v1 simulator (docs/simulators.md).
    Bosh(sim_bosh::BoshArgs),
    /// A Vault KV v2 server (docs/simulators.md).
    Vault(VaultArgs),
}

#[derive(Args, Debug)]
struct VaultArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: String,
    /// The root token requests must carry in X-Vault-Token.
    #[arg(long)]
    token: String,
    /// A KV v2 mount besides `secret` (repeatable).
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// Credentials AppRole login accepts: --approle ROLE_ID:SECRET_ID (repeatable).
    #[arg(long = "approle")]
    approles: Vec<crate::sim::vault::AppRole>,
}

async fn sim_vault(a: VaultArgs) -> Result<i32> {
    let config = crate::sim::vault::VaultSimConfig {
        token: a.token,
        mounts: a.mounts,
        approles: a.approles,
    };
    config.check()?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("could not listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Signal handlers first: a test may send SIGTERM as soon as it reads the line.
    let shutdown = crate::sim::vault::shutdown_signal()?;
    println!("anvil sim vault listening on http://{addr}");
    std::io::stdout().flush()?;
    crate::sim::vault::serve_until(listener, config, shutdown).await?;
    Ok(0)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}): use e.g. 30s, 5m, 1h"))
}

/// Runs the command line and returns the exit code.
///
/// # Errors
/// Any failure, for `main` to print; exit code 1.
pub fn run() -> Result<i32> {
    // Usage errors exit 1 like every other error: exit 2 means "changes present" or
    // "drift found", and a CI job must not read a mistyped flag as drift.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            });
        }
    };
    // Diagnostics (phase timings, provider calls) go to stderr with ANVIL_LOG=debug.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANVIL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let color =
        !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(dispatch(cli, color))
}

/// With --verbose, says on stderr which YAML files a directory scan skipped.
fn note_skipped(verbose: bool, ws: &Workspace) {
    if verbose && !ws.skipped.is_empty() {
        let list: Vec<String> = ws.skipped.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "skipped {} non-anvil YAML file(s): {}",
            list.len(),
            list.join(", ")
        );
    }
}

fn inputs(spec: &SpecArgs, state: &Option<String>) -> Inputs {
    Inputs {
        paths: spec.paths.clone(),
        vars: spec.vars.clone(),
        var_files: spec.var_files.clone(),
        state_url: state.clone(),
    }
}

fn plan_options(flags: &PlanFlags, destroy: bool) -> PlanOptions {
    PlanOptions {
        targets: flags.targets.clone(),
        excludes: flags.excludes.clone(),
        replace: flags.replace.clone(),
        destroy,
    }
}

async fn dispatch(cli: Cli, color: bool) -> Result<i32> {
    let style = render::Style { color };
    match cli.command {
        Command::Validate(spec) => {
            let ws = ops::load_workspace(&inputs(&spec, &cli.state), Registry::builtin())?;
            note_skipped(spec.verbose, &ws);
            println!(
                "The spec is valid: {} resource(s) in workspace `{}` from {} file(s).",
                ws.model.len(),
                ws.name,
                ws.files.len()
            );
            Ok(0)
        }
        Command::Plan(a) => {
            let (ws, state) =
                ops::load_workspace_and_state(&inputs(&a.spec, &cli.state), Registry::builtin())
                    .await?;
            note_skipped(a.spec.verbose, &ws);
            let opts = plan_options(&a.flags, a.destroy);
            let observed = if a.flags.refresh {
                ops::refresh(&ws.registry, &state, a.flags.parallelism).await?
            } else {
                Default::default()
            };
            let mut plan = ops::make_plan(&ws, &state, &observed, &opts)?;
            if a.flags.refresh {
                ops::preview(&ws.registry, &mut plan, a.flags.parallelism).await;
            }
            // The JSON document costs time on big plans: build it only when asked for.
            let doc = (a.json || a.out.is_some())
                .then(|| ops::plan_document(&ws, &state, &plan, &observed, &opts, a.flags.refresh));
            if let (true, Some(doc)) = (a.json, &doc) {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render::render_plan(&plan, style));
            }
            if let (Some(out), Some(doc)) = (&a.out, &doc) {
                let body = serde_json::to_string_pretty(doc)? + "\n";
                std::fs::write(out, body)
                    .with_context(|| format!("{}: could not write the plan file", out.display()))?;
                if !a.json {
                    println!(
                        "\nSaved the plan to {}. Apply exactly this plan with: anvil apply {}",
                        out.display(),
                        out.display()
                    );
                }
            }
            Ok(if a.detailed_exitcode && plan.has_changes() {
                2
            } else {
                0
            })
        }
        Command::Apply(ApplyCmdArgs {
            common: a,
            refresh_only,
        }) => {
            if refresh_only {
                if planfile_arg(&a.spec.paths).is_some() {
                    bail!("--refresh-only reads the real world itself and cannot apply a saved plan; run `anvil apply --refresh-only PATH` with the spec path");
                }
                return apply_refresh_only(
                    inputs(&a.spec, &cli.state),
                    a.spec.verbose,
                    plan_options(&a.flags, false),
                    &a.flags,
                    a.auto_approve,
                    a.lock_timeout,
                )
                .await;
            }
            if let Some(planfile) = planfile_arg(&a.spec.paths) {
                return apply_planfile(&planfile, &a, &cli.state, style).await;
            }
            let opts = plan_options(&a.flags, false);
            plan_and_apply(
                inputs(&a.spec, &cli.state),
                a.spec.verbose,
                opts,
                &a.flags,
                a.auto_approve,
                a.lock_timeout,
                style,
                "apply",
            )
            .await
        }
        Command::Drift(a) => {
            let (ws, state) =
                ops::load_workspace_and_state(&inputs(&a.spec, &cli.state), Registry::builtin())
                    .await?;
            note_skipped(a.spec.verbose, &ws);
            let opts = plan_options(&a.flags, false);
            let (report, _) =
                ops::drift(&ws, &state, &opts, a.flags.refresh, a.flags.parallelism).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if a.markdown {
                print!("{}", crate::drift::render::render_markdown(&report));
            } else {
                print!("{}", crate::drift::render::render_text(&report));
            }
            Ok(if report.clean { 0 } else { 2 })
        }
        Command::Import(a) => {
            let ws = ops::load_workspace(&inputs(&a.spec, &cli.state), Registry::builtin())?;
            note_skipped(a.spec.verbose, &ws);
            let imp = ops::import(&ws, &a.address, &a.id, a.lock_timeout).await?;
            println!(
                "Imported {} (ID `{}`) into state {}.",
                imp.address,
                a.id,
                ws.backend.describe()
            );
            if imp.shaped_by_spec {
                println!("Run `anvil plan` to see whether the object differs from the spec.");
            } else {
                println!("The spec's attributes name another object or are not known yet; run `anvil plan` to see what apply would change.");
            }
            Ok(0)
        }
        Command::Destroy(a) => {
            let opts = plan_options(&a.flags, true);
            plan_and_apply(
                inputs(&a.spec, &cli.state),
                a.spec.verbose,
                opts,
                &a.flags,
                a.auto_approve,
                a.lock_timeout,
                style,
                "destroy",
            )
            .await
        }
        Command::Show(a) => match &a.planfile {
            Some(p) => {
                let doc = read_planfile(p)?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                } else {
                    print!(
                        "{}",
                        render::render_plan(&output::plan_from_document(&doc), style)
                    );
                }
                Ok(0)
            }
            None => {
                let ws = ops::load_workspace(
                    &Inputs {
                        state_url: cli.state.clone(),
                        ..Default::default()
                    },
                    Registry::builtin(),
                )?;
                let st = ws.backend.load().await?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&st)?);
                } else {
                    print!("{}", output::render_state(&st));
                }
                Ok(0)
            }
        },
        Command::State(cmd) => state_command(cmd, &cli.state).await,
        Command::Graph(a) => {
            let ws = ops::load_workspace(&inputs(&a.spec, &cli.state), Registry::builtin())?;
            note_skipped(a.spec.verbose, &ws);
            print!("{}", output::render_graph(&ws.model, &a.format));
            Ok(0)
        }
        Command::Schema { kind } => {
            let schema = match kind.to_ascii_lowercase().as_str() {
                "plan" => crate::plan::json::schema(),
                "drift" => crate::drift::schema(),
                k => crate::spec::schema_for_kind(k).ok_or_else(|| {
                    anyhow!(
                        "unknown kind `{kind}`: expected one of {}, plan, drift",
                        crate::spec::KINDS.join(", ").to_lowercase()
                    )
                })?,
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Command::Sim(SimCmd::Vault(a)) => sim_vault(a).await,
        Command::ForceUnlock { id, spec } => {
            let backend = open_backend(&spec, &cli.state)?;
            backend.force_unlock(&id).await?;
            println!(
                "Lock {id} removed from {}. anvil commands can take the state again.",
                backend.describe()
            );
            Ok(0)
        }
        Command::Sim(SimCmd::Bosh(a)) => sim_bosh::run(a).await,
        Command::Reconcile(a) => reconcile::run(a).await,
    }
}

/// `apply FILE` where FILE is a saved plan (JSON, not YAML).
fn planfile_arg(paths: &[PathBuf]) -> Option<PathBuf> {
    let [p] = paths else { return None };
    if !p.is_file() || p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        return None;
    }
    let head = std::fs::read(p).ok()?;
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    text.contains("\"anvil-plan\"").then(|| p.clone())
}

fn read_planfile(p: &PathBuf) -> Result<PlanDocument> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("{}: could not read the plan file", p.display()))?;
    let doc: PlanDocument = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: not an anvil plan file: {e}; make one with `anvil plan --out FILE`",
            p.display(),
            e.line(),
            e.column()
        )
    })?;
    if doc.format != crate::plan::json::FORMAT
        || doc.format_version != crate::plan::json::FORMAT_VERSION
    {
        bail!(
            "{}: plan format {} v{} is not supported by anvil {} (expected {} v{})",
            p.display(),
            doc.format,
            doc.format_version,
            env!("CARGO_PKG_VERSION"),
            crate::plan::json::FORMAT,
            crate::plan::json::FORMAT_VERSION
        );
    }
    Ok(doc)
}

fn open_backend(
    spec: &SpecArgs,
    state_url: &Option<String>,
) -> Result<Box<dyn state::StateBackend>> {
    if state_url.is_some() && spec.paths.is_empty() {
        return Ok(state::open(state_url.as_deref(), "default")?);
    }
    let ws = ops::load_workspace(&inputs(spec, state_url), Registry::builtin())?;
    Ok(ws.backend)
}

fn confirm(what: &str, auto_approve: bool) -> Result<bool> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{what} needs confirmation, but there is no terminal to ask on: review the plan above and run again with --auto-approve (or apply a saved plan file)");
    }
    print!("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

#[allow(clippy::too_many_arguments)]
async fn plan_and_apply(
    inp: Inputs,
    verbose: bool,
    opts: PlanOptions,
    flags: &PlanFlags,
    auto_approve: bool,
    lock_timeout: Duration,
    style: render::Style,
    what: &str,
) -> Result<i32> {
    let ws = ops::load_workspace(&inp, Registry::builtin())?;
    note_skipped(verbose, &ws);
    let lock = ws.backend.lock(what, lock_timeout).await?;
    let state = ops::load_locked(&ws, lock.as_ref()).await?;
    let observed = if flags.refresh {
        ops::refresh(&ws.registry, &state, flags.parallelism).await?
    } else {
        Default::default()
    };
    let mut plan = ops::make_plan(&ws, &state, &observed, &opts)?;
    if flags.refresh {
        ops::preview(&ws.registry, &mut plan, flags.parallelism).await;
    }
    print!("{}", render::render_plan(&plan, style));
    if !plan.has_changes() {
        return Ok(0);
    }
    if !confirm(what, auto_approve)? {
        println!("\n{what} cancelled.");
        return Ok(1);
    }
    execute(&ws, state, lock.as_ref(), &plan, flags.parallelism, what).await
}

/// `apply --refresh-only`: under the lock, read the real world, show what will be
/// recorded, ask, and record it. No provider changes anything.
async fn apply_refresh_only(
    inp: Inputs,
    verbose: bool,
    opts: PlanOptions,
    flags: &PlanFlags,
    auto_approve: bool,
    lock_timeout: Duration,
) -> Result<i32> {
    if !flags.refresh {
        bail!("--refresh-only records what the real world has, so it must read it: drop --refresh=false");
    }
    let ws = ops::load_workspace(&inp, Registry::builtin())?;
    note_skipped(verbose, &ws);
    let lock = ws
        .backend
        .lock("apply --refresh-only", lock_timeout)
        .await?;
    let state = ops::load_locked(&ws, lock.as_ref()).await?;
    let (report, observed) = ops::drift(&ws, &state, &opts, true, flags.parallelism).await?;
    if observed.is_empty() {
        println!("No changes outside anvil: the state already matches the real world. Nothing to record.");
        return Ok(0);
    }
    let removed = observed.values().filter(|o| o.is_none()).count();
    let shown = report
        .resources
        .iter()
        .filter(|e| e.outside.is_some())
        .count();
    println!("anvil will record the real world in state; nothing in the real world is changed:");
    print!("{}", crate::drift::render::render_outside(&report));
    if observed.len() > shown {
        println!(
            "
  ({} more record(s) only get their computed outputs updated, e.g. versions)",
            observed.len() - shown
        );
    }
    println!(
        "
Refresh-only: {} to record, {} to remove from state.",
        observed.len() - removed,
        removed
    );
    if !confirm("apply --refresh-only", auto_approve)? {
        println!(
            "
apply --refresh-only cancelled."
        );
        return Ok(1);
    }
    let (_, done) = ops::record_observed(&ws, state, lock.as_ref(), &observed).await?;
    println!(
        "
Refresh-only apply complete! {} recorded, {} removed from state; the real world was not changed.",
        done.updated, done.removed
    );
    Ok(0)
}

async fn apply_planfile(
    path: &PathBuf,
    a: &ApplyArgs,
    state_url: &Option<String>,
    style: render::Style,
) -> Result<i32> {
    let doc = read_planfile(path)?;
    let files: Vec<PathBuf> = doc.spec.files.iter().map(PathBuf::from).collect();
    let inp = Inputs {
        paths: files,
        vars: a.spec.vars.clone(),
        var_files: a.spec.var_files.clone(),
        state_url: state_url.clone(),
    };
    let ws = ops::load_workspace(&inp, Registry::builtin()).map_err(|e| {
        anyhow!(
            "{}: the spec this plan was made from cannot be loaded again: {e}",
            path.display()
        )
    })?;
    let lock = ws.backend.lock("apply", a.lock_timeout).await?;
    let state = ops::load_locked(&ws, lock.as_ref()).await?;
    let mut state = state;
    let (plan, _observed) =
        ops::check_saved_plan(&ws, &mut state, &doc, &path.display().to_string())?;
    print!("{}", render::render_plan(&plan, style));
    if !plan.has_changes() {
        return Ok(0);
    }
    execute(
        &ws,
        state,
        lock.as_ref(),
        &plan,
        a.flags.parallelism,
        "apply",
    )
    .await
}

async fn execute(
    ws: &Workspace,
    state: State,
    lock: &dyn state::Lock,
    plan: &Plan,
    parallelism: usize,
    what: &str,
) -> Result<i32> {
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let total = plan
        .changes
        .iter()
        .filter(|c| c.action != crate::plan::Action::NoOp)
        .count();
    let printer = tokio::spawn(output::progress(rx, total));
    // Register the handlers before any work starts, so an early Ctrl-C is never lost
    // to the default action (which would kill the run without recording anything).
    let mut interrupts = Interrupts::register();
    let signals = tokio::spawn(async move {
        interrupts.next().await;
        eprintln!("\nInterrupt received: no new operations will start; waiting for those in flight to finish and be recorded. Interrupt again to stop at once (the journal keeps state readable).");
        let _ = cancel_tx.send(true);
        interrupts.next().await;
        eprintln!(
            "Second interrupt: stopping now. The next run finishes what the journal recorded."
        );
        std::process::exit(130);
    });
    let result = ops::run_apply(
        ws,
        state,
        lock,
        plan,
        &ApplyConfig { parallelism },
        crate::apply::Channels {
            events: tx,
            cancel: cancel_rx,
            abort: crate::providers::CancellationToken::new(),
        },
    )
    .await;
    let _ = printer.await;
    signals.abort();
    let (_state, report) = result?;
    print!("{}", output::render_report(&report, what));
    if lock.is_lost() {
        eprintln!("Warning: the state lock was lost during the run (its lease expired and another process took it); check `anvil plan` before running again.");
    }
    Ok(if report.success() { 0 } else { 1 })
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), registered when created.
struct Interrupts {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupts {
    fn register() -> Interrupts {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Interrupts { streams }
        }
        #[cfg(not(unix))]
        Interrupts {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((i, t)) = &mut self.streams {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn state_command(cmd: StateCmd, state_url: &Option<String>) -> Result<i32> {
    match cmd {
        StateCmd::List { spec } => {
            let backend = open_backend(&spec, state_url)?;
            let st = backend.load().await?;
            for addr in st.resources.keys() {
                println!("{addr}");
            }
            Ok(0)
        }
        StateCmd::Show { address, spec } => {
            let backend = open_backend(&spec, state_url)?;
            let st = backend.load().await?;
            let rec = st.resources.get(&address).ok_or_else(|| {
                anyhow!(
                    "{address}: not in state {}; see `anvil state list`",
                    backend.describe()
                )
            })?;
            print!("{}", output::render_record(&address, rec));
            Ok(0)
        }
        StateCmd::Rm {
            addresses,
            lock_timeout,
            path,
        } => {
            let backend = open_backend(&SpecArgs::at(path), state_url)?;
            ops::state_rm(backend.as_ref(), &addresses, lock_timeout).await?;
            for a in &addresses {
                println!("Removed {a} from state (the real object is untouched).");
            }
            Ok(0)
        }
        StateCmd::Mv {
            source,
            destination,
            lock_timeout,
            path,
        } => {
            let backend = open_backend(&SpecArgs::at(path), state_url)?;
            ops::state_mv(backend.as_ref(), &source, &destination, lock_timeout).await?;
            println!("Moved {source} to {destination}.");
            Ok(0)
        }
    }
}

impl SpecArgs {
    /// Just a spec path, for commands that only need the workspace name.
    fn at(path: PathBuf) -> SpecArgs {
        SpecArgs {
            paths: vec![path],
            vars: vec![],
            var_files: vec![],
            verbose: false,
        }
    }
}

/// Maps an error to what the user sees (used by `main`).
pub fn describe_error(e: &anyhow::Error) -> String {
    if let Some(OpsError::Spec(errs)) = e.downcast_ref::<OpsError>() {
        return format!("{errs}");
    }
    format!("{e:#}")
}
