//! Apply tests against an in-process provider that records every call and how many ran
//! at once, with the real local state backend in a scratch directory.

use super::*;
use crate::model::{AttrKind, AttrSchema, Expr, Model, Resource, ResourceSchema};
use crate::plan::{plan, Observed, PlanOptions};
use crate::providers::Registry;
use crate::spec::Lifecycle;
use crate::state::LocalBackend;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Default)]
struct Recorder {
    limit: usize,
    /// Each operation waits (up to 1 s of paused tokio time) until this many run at
    /// once, so the observed maximum does not depend on how fast the journal thread is.
    expect: AtomicUsize,
    log: Mutex<Vec<String>>,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Recorder {
    async fn work(&self, what: String) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        let want = self.expect.load(Ordering::SeqCst);
        for _ in 0..1000 {
            if self.now.load(Ordering::SeqCst) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.log.lock().unwrap().push(what);
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Provider for Recorder {
    fn name(&self) -> &'static str {
        "rec"
    }
    fn schemas(&self) -> Vec<ResourceSchema> {
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "triggers".into(),
            AttrSchema::new(AttrKind::Map, "").force_new(),
        );
        attributes.insert("inputs".into(), AttrSchema::new(AttrKind::Any, ""));
        let outputs = [("id".to_string(), "")].into_iter().collect();
        vec![ResourceSchema {
            ty: "rec".into(),
            provider: "rec".into(),
            attributes,
            outputs,
        }]
    }
    fn concurrency_limit(&self) -> usize {
        self.limit
    }
    async fn read(
        &self,
        _: &str,
        r: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        Ok(Some(r.clone()))
    }
    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        self.work(format!("create {}", req.address)).await;
        let id = format!("{}-{}", req.address, self.log.lock().unwrap().len());
        Ok(Applied {
            attributes: req.attributes.clone(),
            outputs: [("id".to_string(), json!(id))].into_iter().collect(),
        })
    }
    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        self.work(format!("update {}", req.address)).await;
        Ok(Applied {
            attributes: req.attributes.clone(),
            outputs: req.prior.map(|p| p.outputs.clone()).unwrap_or_default(),
        })
    }
    async fn delete(&self, address: &str, _: &ResourceState) -> Result<(), ProviderError> {
        self.work(format!("delete {address}")).await;
        Ok(())
    }
}

fn res(name: &str, attrs: serde_json::Value, deps: &[&str], lifecycle: Lifecycle) -> Resource {
    let attributes: BTreeMap<String, Expr> = attrs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), Expr::parse(v).unwrap()))
        .collect();
    let mut dependencies: Vec<Address> = deps.iter().map(|d| Address::new("rec", d)).collect();
    for e in attributes.values() {
        let mut refs = vec![];
        e.references(&mut refs);
        dependencies.extend(refs.into_iter().map(|r| r.target));
    }
    dependencies.sort();
    dependencies.dedup();
    Resource {
        address: Address::new("rec", name),
        provider: "rec".into(),
        attributes,
        dependencies,
        lifecycle,
        origin: None,
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    backend: LocalBackend,
    rec: Arc<Recorder>,
    registry: Registry,
}

impl Harness {
    fn new(limit: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("t.json"));
        let rec = Arc::new(Recorder {
            limit,
            ..Default::default()
        });
        let mut registry = Registry::default();
        registry.register(rec.clone());
        Harness {
            _dir: dir,
            backend,
            rec,
            registry,
        }
    }

    async fn run(
        &self,
        resources: Vec<Resource>,
        opts: PlanOptions,
        parallelism: usize,
    ) -> (State, Report) {
        let model = Model::from_resources(resources).unwrap();
        let state = self.backend.load().unwrap();
        let p = plan(
            &model,
            &state,
            &Observed::new(),
            self.registry.schemas(),
            &opts,
        )
        .unwrap();
        let lock = self.backend.lock("test", Duration::ZERO).unwrap();
        let journal = self.backend.journal(&state, &lock).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (_cancel_tx, cancel) = watch::channel(false);
        self.rec.log.lock().unwrap().clear();
        self.rec.max.store(0, Ordering::SeqCst);
        let out = apply(
            &p,
            &model,
            &self.registry,
            state,
            Box::new(journal),
            &ApplyConfig {
                parallelism,
                ..ApplyConfig::default()
            },
            Channels {
                events: tx,
                cancel,
                abort: crate::providers::CancellationToken::new(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            self.backend.load().unwrap().resources,
            out.0.resources,
            "state on disk matches the run"
        );
        out
    }

    fn log(&self) -> Vec<String> {
        self.rec.log.lock().unwrap().clone()
    }
}

fn independent(n: usize) -> Vec<Resource> {
    (0..n)
        .map(|i| {
            res(
                &format!("r{i:02}"),
                json!({"triggers": {"i": i}}),
                &[],
                Lifecycle::default(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn at_most_parallelism_operations_at_once() {
    let h = Harness::new(100);
    h.rec.expect.store(4, Ordering::SeqCst);
    let (st, report) = h.run(independent(30), PlanOptions::default(), 4).await;
    assert!(report.success());
    assert_eq!(st.resources.len(), 30);
    assert_eq!(h.rec.max.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn at_most_the_provider_limit_at_once() {
    let h = Harness::new(3);
    h.rec.expect.store(3, Ordering::SeqCst);
    let (_, report) = h.run(independent(20), PlanOptions::default(), 10).await;
    assert!(report.success());
    assert_eq!(h.rec.max.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn creates_follow_dependencies_and_deletes_run_in_reverse() {
    let h = Harness::new(10);
    let chain = || {
        vec![
            res("a", json!({}), &[], Lifecycle::default()),
            res(
                "b",
                json!({"inputs": {"a": "${rec.a.id}"}}),
                &[],
                Lifecycle::default(),
            ),
            res("c", json!({}), &["b"], Lifecycle::default()),
        ]
    };
    let (st, _) = h.run(chain(), PlanOptions::default(), 10).await;
    assert_eq!(
        h.log(),
        vec!["create rec.a", "create rec.b", "create rec.c"]
    );
    let a_id = st.resources["rec.a"].outputs["id"].clone();
    assert_eq!(
        st.resources["rec.b"].attributes["inputs"],
        json!({ "a": a_id })
    );
    let (st, _) = h
        .run(
            chain(),
            PlanOptions {
                destroy: true,
                ..Default::default()
            },
            10,
        )
        .await;
    assert_eq!(
        h.log(),
        vec!["delete rec.c", "delete rec.b", "delete rec.a"]
    );
    assert!(st.resources.is_empty());
}

#[tokio::test(start_paused = true)]
async fn replace_orders() {
    let h = Harness::new(10);
    let one = |v: i64, cbd: bool| {
        vec![res(
            "x",
            json!({"triggers": {"v": v}}),
            &[],
            Lifecycle {
                create_before_destroy: cbd,
                ..Default::default()
            },
        )]
    };
    h.run(one(1, false), PlanOptions::default(), 10).await;
    h.run(one(2, false), PlanOptions::default(), 10).await;
    assert_eq!(h.log(), vec!["delete rec.x", "create rec.x"]);
    let (st, _) = h.run(one(3, true), PlanOptions::default(), 10).await;
    assert_eq!(h.log(), vec!["create rec.x", "delete rec.x"]);
    assert_eq!(
        st.resources.keys().collect::<Vec<_>>(),
        vec!["rec.x"],
        "the deposed object is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn cbd_dependent_of_a_replaced_dependency_has_no_cycle() {
    let h = Harness::new(10);
    let m = |v: i64| {
        vec![
            res(
                "db",
                json!({"triggers": {"v": v}}),
                &[],
                Lifecycle::default(),
            ),
            res(
                "app",
                json!({"triggers": {"db": "${rec.db.id}"}}),
                &[],
                Lifecycle {
                    create_before_destroy: true,
                    ..Default::default()
                },
            ),
        ]
    };
    h.run(m(1), PlanOptions::default(), 10).await;
    let (st, report) = h.run(m(2), PlanOptions::default(), 10).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(
        h.log(),
        vec![
            "create rec.db",
            "create rec.app",
            "delete rec.app",
            "delete rec.db"
        ]
    );
    assert_eq!(st.resources.len(), 2);
}
