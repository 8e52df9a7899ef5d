//! The command line: argument parsing, terminal output and exit codes. Each command
//! parses its flags, calls one `ops` function, renders the events and the result, and
//! maps it to an exit code; the only logic here is presentation.
//!
//! Exit codes, as Terraform: 0 success (no changes), 1 error (usage errors included),
//! 2 changes present (with `--detailed-exitcode`, or drift found by `anvil drift`).

mod broker;
mod capacity;
mod output;
mod reconcile;
mod serve;
mod sim_bosh;
mod sim_cf;

use crate::ops::{
    self, ApplyOutcome, ApplyRequest, CancellationToken, DriftRequest, EventSink, Inputs, OpsError,
    OpsEvent, PlanRequest, RefreshOnlyOutcome, RefreshProposal, SavedPlanRequest, StateTarget,
};
use crate::plan::{render, Plan, PlanOptions};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "anvil",
    version,
    about = "Declarative plan-and-apply for Cloud Foundry service foundations and the cloud under them"
)]
pub struct Cli {
    /// Never colour the output (also: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    no_color: bool,
    /// Diagnostics on stderr as `text` or `json` lines (one object per event, with the
    /// span fields such as `correlation_id` and `environment_id`). Level: ANVIL_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How diagnostics are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
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
    Destroy(DestroyArgs),
    /// Show the state (from the state alone: no spec is read), or a saved plan.
    Show(ShowArgs),
    /// Inspect and edit the state (from the state alone: no spec is read).
    #[command(subcommand)]
    State(StateCmd),
    /// Print the resource graph.
    Graph(GraphArgs),
    /// List the service instances: those the spec declares and those the broker created.
    Instances(InstancesArgs),
    /// Print the outputs (an Environment's vpc_id, cluster_endpoint, ...; `outputs:` of
    /// Resources documents) from the state of the last apply: anvil output [NAME].
    Output(OutputArgs),
    /// Print the JSON Schema of a spec kind, the plan (`plan`) or the drift report (`drift`).
    Schema {
        /// Which schema to print.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(ops::schema_kinds()), ignore_case = true)]
        kind: String,
    },
    /// Remove a stuck lock (see the lock's id in the error that names its holder).
    ForceUnlock {
        /// The lock's id, as the error naming its holder prints it.
        id: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Run a simulator of a service anvil manages (for tests, demos and CI).
    #[command(subcommand)]
    Sim(SimCmd),
    /// Bring Blacksmith's Vault index back into agreement with the Director's deployments.
    Reconcile(reconcile::ReconcileArgs),
    /// Serve the Open Service Broker API over a Foundation (docs/broker.md).
    Broker(broker::BrokerArgs),
    /// Serve the environments REST API and run its workers (docs/serve.md).
    Serve(serve::ServeArgs),
    /// Diego cells' capacity (from the Director's vitals), apps and isolation segments
    /// (from the CF API), as text or JSON (docs/capacity.md).
    Capacity(capacity::CapacityArgs),
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

/// The state of a command that reads a spec: its workspace is the spec's `metadata.name`.
#[derive(Args, Debug, Clone)]
struct StateArg {
    /// State backend URL (default: state/<metadata.name>.json): a path or `file://PATH`,
    /// `postgres://USER:PASSWORD@HOST:PORT/DB[?schema=NAME]`, `vault://MOUNT/PATH`,
    /// `s3://BUCKET/KEY[?region=REGION]`.
    #[arg(long, env = "ANVIL_STATE")]
    state: Option<String>,
}

/// The state of a command that reads no spec.
#[derive(Args, Debug, Clone)]
struct TargetArgs {
    /// State backend URL: a path or `file://PATH` (a directory: with --workspace, or the
    /// only state in it), `postgres://USER:PASSWORD@HOST:PORT/DB[?schema=NAME]`,
    /// `vault://MOUNT/PATH` or `s3://BUCKET/KEY` (with --workspace).
    #[arg(long, env = "ANVIL_STATE")]
    state: Option<String>,
    /// Workspace whose state to use: state/NAME.json (default: the only state under ./state/).
    #[arg(long, short = 'w')]
    workspace: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> StateTarget {
        StateTarget {
            url: self.state.clone(),
            workspace: self.workspace.clone(),
        }
    }
}

/// Which part of the spec a run covers.
#[derive(Args, Debug, Clone)]
struct ScopeFlags {
    /// Plan only these addresses and what they depend on.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Leave these addresses and what depends on them out.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
}

/// How a run reads the real world.
#[derive(Args, Debug, Clone)]
struct RunFlags {
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
    state: StateArg,
    #[command(flatten)]
    scope: ScopeFlags,
    /// Replace these resources even if nothing changed.
    #[arg(long = "replace")]
    replace: Vec<String>,
    #[command(flatten)]
    run: RunFlags,
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
    /// Compare the memory and disk planned BOSH deployments add with what the
    /// Director's Diego cells have free: warn, error (exit 1), or off.
    #[arg(long, value_enum, default_value = "warn")]
    capacity_check: CapacityCheck,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum CapacityCheck {
    Warn,
    Error,
    Off,
}

#[derive(Args, Debug)]
struct ApplyCmdArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    state: StateArg,
    #[command(flatten)]
    scope: ScopeFlags,
    /// Replace these resources even if nothing changed.
    #[arg(long = "replace")]
    replace: Vec<String>,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    approval: Approval,
    /// Accept the real world into state (record changes made outside anvil) without
    /// changing anything in it.
    #[arg(long)]
    refresh_only: bool,
}

#[derive(Args, Debug)]
struct DestroyArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    state: StateArg,
    #[command(flatten)]
    scope: ScopeFlags,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    approval: Approval,
}

/// What `apply` and `destroy` share about taking over.
#[derive(Args, Debug)]
struct Approval {
    /// Apply without asking (required without a terminal).
    #[arg(long)]
    auto_approve: bool,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

#[derive(Args, Debug)]
struct DriftArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    state: StateArg,
    #[command(flatten)]
    scope: ScopeFlags,
    #[command(flatten)]
    run: RunFlags,
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
    #[command(flatten)]
    state: StateArg,
    /// Wait this long for the state lock (e.g. 30s, 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// A saved plan file; without it, the state (see --state and --workspace).
    planfile: Option<PathBuf>,
    /// Print JSON (the state document, or the saved plan as saved).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Subcommand, Debug)]
enum StateCmd {
    /// List recorded addresses.
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Show one recorded resource.
    Show {
        /// The recorded address, e.g. null_resource.app.
        address: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Forget resources (the real objects are kept).
    Rm {
        /// The recorded addresses to forget.
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Wait this long for the state lock (e.g. 30s, 5m).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Move a record to another address.
    Mv {
        /// The recorded address to move.
        source: String,
        /// The new address (same resource type).
        destination: String,
        /// Wait this long for the state lock (e.g. 30s, 5m).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Print only this output: a string as it is, any other value as JSON.
    name: Option<String>,
    /// Spec files or directories declaring the outputs (repeatable; default: the
    /// current directory).
    #[arg(long = "spec", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Set a variable: --var NAME=VALUE (repeatable).
    #[arg(long = "var")]
    vars: Vec<String>,
    /// Read variables from a YAML or JSON file (repeatable).
    #[arg(long = "var-file")]
    var_files: Vec<PathBuf>,
    /// Print JSON: {"NAME": {"value": ..., "description": ...}}, or NAME's value.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args, Debug)]
struct GraphArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Output format: Graphviz `dot`, or `json` ({nodes, edges}).
    #[arg(long, default_value = "dot", value_parser = ["dot", "json"])]
    format: String,
}

#[derive(Args, Debug)]
struct InstancesArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    state: StateArg,
    /// Print JSON (an array of {id, service_id, plan_id, deployment, origin, foundation,
    /// status?, declared_at?}) instead of a table.
    #[arg(long)]
    json: bool,
}

// ---- `anvil sim vault` ----

#[derive(Subcommand, Debug)]
enum SimCmd {
    /// A BOSH Director API v1 simulator (docs/simulators.md).
    Bosh(sim_bosh::BoshArgs),
    /// A Cloud Foundry API v3 simulator: apps, processes, stats, isolation segments
    /// (docs/simulators.md).
    Cf(sim_cf::CfArgs),
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
    // Diagnostics (phase timings, provider calls) go to stderr with ANVIL_LOG=debug;
    // colour codes only when stderr is a terminal, so a CI log stays readable.
    // A server reports its requests and jobs at `info`; other commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANVIL_LOG")
        .unwrap_or_else(|_| default_level.into());
    let _ = match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let color =
        !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(dispatch(cli, color))
}

impl Command {
    /// Whether the command's spec arguments ask for `--verbose`.
    fn verbose(&self) -> bool {
        match self {
            Command::Validate(s) => s.verbose,
            Command::Plan(a) => a.spec.verbose,
            Command::Apply(a) => a.spec.verbose,
            Command::Drift(a) => a.spec.verbose,
            Command::Import(a) => a.spec.verbose,
            Command::Destroy(a) => a.spec.verbose,
            Command::Graph(a) => a.spec.verbose,
            Command::Instances(a) => a.spec.verbose,
            _ => false,
        }
    }
}

fn inputs(spec: &SpecArgs, state: &StateArg) -> Inputs {
    Inputs {
        paths: spec.paths.clone(),
        vars: spec.vars.clone(),
        var_files: spec.var_files.clone(),
        state_url: state.state.clone(),
    }
}

fn plan_options(scope: &ScopeFlags, replace: &[String], destroy: bool) -> PlanOptions {
    PlanOptions {
        targets: scope.targets.clone(),
        excludes: scope.excludes.clone(),
        replace: replace.to_vec(),
        destroy,
    }
}

/// What every command gets: where its events go, how it is cancelled, and the task
/// that renders the events (awaited once the command returns, so every line is out).
struct Session {
    sink: EventSink,
    cancel: CancellationToken,
    /// Fired by a second interrupt: provider calls in flight stop waiting.
    abort: CancellationToken,
    /// Set when the apply walk starts: from then on an interrupt drains work in flight.
    draining: Arc<AtomicBool>,
    renderer: tokio::task::JoinHandle<()>,
}

impl Session {
    fn new(reconcile_json: bool, verbose: bool) -> Session {
        let (sink, rx) = mpsc::unbounded_channel::<OpsEvent>();
        let draining = Arc::new(AtomicBool::new(false));
        let renderer = tokio::spawn(output::events(
            rx,
            draining.clone(),
            output::Show {
                reconcile_json,
                verbose,
            },
        ));
        Session {
            sink,
            cancel: CancellationToken::new(),
            abort: CancellationToken::new(),
            draining,
            renderer,
        }
    }

    /// Turns SIGINT/SIGTERM into cancellation. Before the apply walk starts an interrupt
    /// ends the process at once (nothing was changed); during it, the first one stops new
    /// operations and lets those in flight be recorded, and a second exits 130.
    fn on_interrupt(
        &self,
        messages: [&'static str; 2],
        abort_on_second: bool,
    ) -> tokio::task::JoinHandle<()> {
        // Register the handlers before any work starts, so an early Ctrl-C is never lost
        // to the default action.
        let mut interrupts = Interrupts::register();
        let (cancel, abort, draining) = (
            self.cancel.clone(),
            self.abort.clone(),
            self.draining.clone(),
        );
        tokio::spawn(async move {
            interrupts.next().await;
            if !draining.load(Ordering::SeqCst) {
                eprintln!("\nInterrupted before anything was changed.");
                std::process::exit(130);
            }
            eprintln!("{}", messages[0]);
            cancel.cancel();
            interrupts.next().await;
            eprintln!("{}", messages[1]);
            if abort_on_second {
                // Provider calls in flight stop waiting and are recorded as failed; a
                // third interrupt leaves at once (the journal keeps the state readable).
                abort.cancel();
                interrupts.next().await;
            }
            std::process::exit(130);
        })
    }

    /// Waits until every event is rendered.
    async fn finish(self) {
        drop(self.sink);
        let _ = self.renderer.await;
    }
}

const APPLY_INTERRUPT_MESSAGES: [&str; 2] = [
    "\nInterrupt received: no new operations will start; waiting for those in flight to finish and be recorded. Interrupt again to stop at once (the journal keeps state readable).",
    "Second interrupt: operations in flight stop waiting (a BOSH task is left to the Director) and are recorded as failed; the next run reads them back. Interrupt again to exit at once (the journal keeps state readable).",
];

/// Asks on the terminal whether to go on (always yes with `--auto-approve`).
fn confirm(what: &str, auto_approve: bool) -> Result<bool, OpsError> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(OpsError::Usage(format!("{what} needs confirmation, but there is no terminal to ask on: review the plan above and run again with --auto-approve (or apply a saved plan file)")));
    }
    print!("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    let mut line = String::new();
    std::io::stdout()
        .flush()
        .and_then(|()| std::io::stdin().lock().read_line(&mut line))
        .map_err(|e| OpsError::Usage(format!("{what}: could not read the answer: {e}")))?;
    Ok(line.trim() == "yes")
}

/// The review of `apply`/`destroy`: show the plan, then ask when it has changes.
fn review_plan(
    style: render::Style,
    what: &'static str,
    auto_approve: bool,
) -> impl FnMut(&Plan) -> Result<bool, OpsError> + Send {
    move |plan: &Plan| {
        print!("{}", render::render_plan(plan, style));
        if !plan.has_changes() {
            return Ok(true);
        }
        confirm(what, auto_approve)
    }
}

fn apply_exit(outcome: ApplyOutcome, what: &str) -> i32 {
    match outcome {
        ApplyOutcome::NoChanges => 0,
        ApplyOutcome::Declined => {
            println!("\n{what} cancelled.");
            1
        }
        ApplyOutcome::Applied { report, .. } => {
            print!("{}", output::render_report(&report, what));
            if report.success() {
                0
            } else {
                1
            }
        }
    }
}

async fn dispatch(cli: Cli, color: bool) -> Result<i32> {
    let style = render::Style { color };
    let json = matches!(&cli.command, Command::Reconcile(a) if a.json);
    let session = Session::new(json, cli.command.verbose());
    let (messages, abort_on_second) = if matches!(&cli.command, Command::Reconcile(a) if a.watch) {
        // A watch loop is stopped, not abandoned: the first signal ends it after the
        // current run.
        session.draining.store(true, Ordering::SeqCst);
        (reconcile::STOP_MESSAGES, false)
    } else {
        (APPLY_INTERRUPT_MESSAGES, true)
    };
    // The simulators and the broker stop on their own signals (gracefully, exit 0).
    let signals = (!matches!(
        &cli.command,
        Command::Sim(_) | Command::Broker(_) | Command::Serve(_)
    ))
    .then(|| session.on_interrupt(messages, abort_on_second));
    let result = command(cli.command, style, &session).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    session.finish().await;
    result
}

async fn command(command: Command, style: render::Style, session: &Session) -> Result<i32> {
    let (sink, cancel) = (&session.sink, &session.cancel);
    match command {
        Command::Validate(spec) => {
            let v = ops::validate(&inputs(&spec, &StateArg { state: None }), sink).await?;
            println!(
                "The spec is valid: {} resource(s) in workspace `{}` from {} file(s).",
                v.resources, v.workspace, v.files
            );
            Ok(0)
        }
        Command::Plan(a) => {
            let req = PlanRequest {
                inputs: inputs(&a.spec, &a.state),
                options: plan_options(&a.scope, &a.replace, a.destroy),
                refresh: a.run.refresh,
                parallelism: a.run.parallelism,
                document: a.json,
                out: a.out.clone(),
                capacity_check: match a.capacity_check {
                    CapacityCheck::Warn => ops::capacity::CheckMode::Warn,
                    CapacityCheck::Error => ops::capacity::CheckMode::Error,
                    CapacityCheck::Off => ops::capacity::CheckMode::Off,
                },
            };
            let planned = ops::plan(&req, sink, cancel).await?;
            match (&planned.document, a.json) {
                (Some(doc), true) => println!("{}", serde_json::to_string_pretty(doc)?),
                _ => print!("{}", render::render_plan(&planned.plan, style)),
            }
            if let (Some(out), false) = (&planned.saved_to, a.json) {
                let out = ops::shell_word(&out.display().to_string());
                let state = a
                    .state
                    .state
                    .as_deref()
                    .map(|s| format!(" --state {}", ops::shell_word(&ops::redact_url(s))))
                    .unwrap_or_default();
                println!("\nSaved the plan to {out}. Apply exactly this plan with: anvil apply{state} {out}");
            }
            Ok(if a.detailed_exitcode && planned.plan.has_changes() {
                2
            } else {
                0
            })
        }
        Command::Apply(a) if a.refresh_only => {
            let req = ApplyRequest {
                inputs: inputs(&a.spec, &a.state),
                options: plan_options(&a.scope, &a.replace, false),
                refresh: a.run.refresh,
                parallelism: a.run.parallelism,
                lock_timeout: a.approval.lock_timeout,
                abort: session.abort.clone(),
            };
            let auto = a.approval.auto_approve;
            let mut review = move |p: &RefreshProposal<'_>| {
                println!("anvil will record the real world in state; nothing in the real world is changed:");
                print!("{}", crate::drift::render::render_outside(p.report));
                if p.outputs_only > 0 {
                    println!("\n  ({} more record(s) only get their computed outputs updated, e.g. versions)", p.outputs_only);
                }
                println!(
                    "\nRefresh-only: {} to record, {} to remove from state.",
                    p.to_record, p.to_remove
                );
                confirm("apply --refresh-only", auto)
            };
            Ok(
                match ops::apply_refresh_only(&req, &mut review, sink, cancel).await? {
                    RefreshOnlyOutcome::NothingToRecord => {
                        println!("No changes outside anvil: the state already matches the real world. Nothing to record.");
                        0
                    }
                    RefreshOnlyOutcome::Declined => {
                        println!("\napply --refresh-only cancelled.");
                        1
                    }
                    RefreshOnlyOutcome::Recorded(done) => {
                        println!("\nRefresh-only apply complete! {} recorded, {} removed from state; the real world was not changed.", done.updated, done.removed);
                        0
                    }
                },
            )
        }
        Command::Apply(a) => {
            if let Some(path) = ops::planfile_arg(&a.spec.paths) {
                let req = SavedPlanRequest {
                    path,
                    vars: a.spec.vars.clone(),
                    var_files: a.spec.var_files.clone(),
                    state_url: a.state.state.clone(),
                    parallelism: a.run.parallelism,
                    lock_timeout: a.approval.lock_timeout,
                    abort: session.abort.clone(),
                };
                // A saved plan was reviewed when it was made: show it, do not ask.
                let mut review = review_plan(style, "apply", true);
                let outcome = ops::apply_saved_plan(&req, &mut review, sink, cancel).await?;
                return Ok(apply_exit(outcome, "apply"));
            }
            let req = ApplyRequest {
                inputs: inputs(&a.spec, &a.state),
                options: plan_options(&a.scope, &a.replace, false),
                refresh: a.run.refresh,
                parallelism: a.run.parallelism,
                lock_timeout: a.approval.lock_timeout,
                abort: session.abort.clone(),
            };
            let mut review = review_plan(style, "apply", a.approval.auto_approve);
            let outcome = ops::apply(&req, &mut review, sink, cancel).await?;
            Ok(apply_exit(outcome, "apply"))
        }
        Command::Destroy(a) => {
            let req = ApplyRequest {
                inputs: inputs(&a.spec, &a.state),
                options: plan_options(&a.scope, &[], true),
                refresh: a.run.refresh,
                parallelism: a.run.parallelism,
                lock_timeout: a.approval.lock_timeout,
                abort: session.abort.clone(),
            };
            let mut review = review_plan(style, "destroy", a.approval.auto_approve);
            let outcome = ops::apply(&req, &mut review, sink, cancel).await?;
            Ok(apply_exit(outcome, "destroy"))
        }
        Command::Drift(a) => {
            let req = DriftRequest {
                inputs: inputs(&a.spec, &a.state),
                options: plan_options(&a.scope, &[], false),
                refresh: a.run.refresh,
                parallelism: a.run.parallelism,
            };
            let report = ops::drift_report(&req, sink, cancel).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if a.markdown {
                print!("{}", crate::drift::render::render_markdown(&report));
            } else {
                print!("{}", crate::drift::render::render_text(&report));
                if !report.clean {
                    let args = ops::spec_args(&req.inputs);
                    println!("Run `anvil apply{args}` to bring the real world back to the spec, or `anvil apply --refresh-only{args}` to accept the changes made outside anvil into state.");
                }
            }
            Ok(if report.clean { 0 } else { 2 })
        }
        Command::Import(a) => {
            let inp = inputs(&a.spec, &a.state);
            let done = ops::import(&inp, &a.address, &a.id, a.lock_timeout, sink, cancel).await?;
            println!(
                "Imported {} (ID `{}`) into state {}.",
                done.imported.address, a.id, done.state
            );
            let args = ops::spec_args(&inp);
            if done.imported.shaped_by_spec {
                println!("Run `anvil plan{args}` to see whether the object differs from the spec.");
            } else {
                println!("The spec's attributes name another object or are not known yet; run `anvil plan{args}` to see what apply would change.");
            }
            Ok(0)
        }
        Command::Show(a) => {
            if let Some(p) = &a.planfile {
                let saved = ops::show_planfile(p)?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&saved.document)?);
                } else {
                    print!("{}", render::render_plan(&saved.plan, style));
                }
                return Ok(0);
            }
            let shown = ops::read_state(&a.target.target()).await?;
            if !shown.exists {
                eprintln!("No state at {} (nothing applied yet).", shown.location);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&shown.state)?);
            } else if shown.exists {
                print!("{}", output::render_state(&shown.state));
            }
            Ok(0)
        }
        Command::State(cmd) => state_command(cmd, sink).await,
        Command::Graph(a) => {
            let g = ops::graph(&inputs(&a.spec, &StateArg { state: None }), sink).await?;
            print!("{}", output::render_graph(&g, &a.format));
            Ok(0)
        }
        Command::Instances(a) => {
            let rows = ops::instances::instances(&inputs(&a.spec, &a.state)).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", output::render_instances(&rows));
            }
            Ok(0)
        }
        Command::Output(a) => {
            let spec = SpecArgs {
                paths: a.paths.clone(),
                vars: a.vars.clone(),
                var_files: a.var_files.clone(),
                verbose: false,
            };
            let found = ops::outputs(&inputs(&spec, &a.state), a.name.as_deref(), sink).await?;
            output::print_outputs(&found, a.name.as_deref(), a.json)
        }
        Command::Schema { kind } => {
            println!("{}", serde_json::to_string_pretty(&ops::schema(&kind)?)?);
            Ok(0)
        }
        Command::ForceUnlock { id, target } => {
            let location = ops::force_unlock(&target.target(), &id).await?;
            println!("Lock {id} removed from {location}. anvil commands can take the state again.");
            Ok(0)
        }
        Command::Sim(SimCmd::Vault(a)) => sim_vault(a).await,
        Command::Sim(SimCmd::Bosh(a)) => sim_bosh::run(a).await,
        Command::Sim(SimCmd::Cf(a)) => sim_cf::run(a).await,
        Command::Reconcile(a) => reconcile::run(a, sink, cancel).await,
        Command::Broker(a) => broker::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Capacity(a) => capacity::run(a).await,
    }
}

async fn state_command(cmd: StateCmd, sink: &EventSink) -> Result<i32> {
    match cmd {
        StateCmd::List { target } => {
            let shown = ops::read_state(&target.target()).await?;
            if !shown.exists {
                eprintln!("No state at {} (nothing applied yet).", shown.location);
            }
            for addr in shown.state.resources.keys() {
                println!("{addr}");
            }
            Ok(0)
        }
        StateCmd::Show { address, target } => {
            let rec = ops::state_show(&target.target(), &address).await?;
            print!("{}", output::render_record(&address, &rec));
            Ok(0)
        }
        StateCmd::Rm {
            addresses,
            lock_timeout,
            target,
        } => {
            ops::state_rm(&target.target(), &addresses, lock_timeout, sink).await?;
            for a in &addresses {
                println!("Removed {a} from state (the real object is untouched).");
            }
            Ok(0)
        }
        StateCmd::Mv {
            source,
            destination,
            lock_timeout,
            target,
        } => {
            ops::state_mv(&target.target(), &source, &destination, lock_timeout, sink).await?;
            println!("Moved {source} to {destination}.");
            Ok(0)
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
