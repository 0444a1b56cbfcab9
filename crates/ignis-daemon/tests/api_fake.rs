//! The HTTP layer alone, against a fake service: what it parses (paths,
//! queries, bodies), what it hands the service, and how service errors
//! become RFC 9457 problems with the right status. Plus a bounded property
//! test: random bodies to /v1/apply never reach the service unless they
//! parse, and never get a 5xx.
#![allow(clippy::cast_possible_truncation)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ignis_api::manifest::{Manifest, VmManifest};
use ignis_api::{ImageRecord, SnapshotRecord, VmRecord};
use ignis_client::Client;
use ignis_core::manifest::Applied;
use ignis_core::{Error, ErrorKind};
use ignis_daemon::service::Service;

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn vm(name: &str) -> VmRecord {
    serde_json::from_value(serde_json::json!({
        "id": "0123456789abcdef", "name": name, "imageId": "sha256:aa", "image": "app:1",
        "kernelId": "sha256:bb", "created": 1,
        "spec": {"cpus": 1, "memoryMib": 128, "diskSize": 1, "backend": "fake", "accel": "tcg", "mode": "app"},
        "status": {"state": "running"}
    }))
    .unwrap()
}

fn not_found(q: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no vm named '{q}'"))
}

impl Service for Fake {
    fn vm_list(&self, all: bool) -> Result<Vec<VmRecord>, Error> {
        self.log(format!("vm_list all={all}"));
        Ok(vec![vm("a"), vm("b")])
    }
    fn vm_inspect(&self, query: &str) -> Result<VmRecord, Error> {
        self.log(format!("vm_inspect {query}"));
        if query == "a b/c" {
            Ok(vm(query))
        } else {
            Err(not_found(query))
        }
    }
    fn vm_remove(&self, query: &str, force: bool) -> Result<String, Error> {
        self.log(format!("vm_remove {query} force={force}"));
        Err(Error::new(
            ErrorKind::Conflict,
            "VM x is running; stop it first or use rm -f",
        ))
    }
    fn vm_start(&self, query: &str, wait_ready: bool) -> Result<VmRecord, Error> {
        self.log(format!("vm_start {query} wait={wait_ready}"));
        Ok(vm(query))
    }
    fn vm_stop(&self, query: &str, timeout: Option<Duration>) -> Result<VmRecord, Error> {
        let t = timeout.map_or("the VM's".to_string(), |t| t.as_secs().to_string());
        self.log(format!("vm_stop {query} timeout={t}"));
        Ok(vm(query))
    }
    fn vm_manifest(&self, query: &str) -> Result<VmManifest, Error> {
        self.log(format!("vm_manifest {query}"));
        Err(Error::new(ErrorKind::Internal, "disk on fire"))
    }
    fn apply(&self, manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        let names: Vec<String> = manifests.iter().map(|m| m.name().to_string()).collect();
        self.log(format!("apply {} owner={owner}", names.join(",")));
        Vec::new()
    }
    fn converge(&self, _manifests: &[Manifest], owner: &str) -> Vec<Applied> {
        self.log(format!("converge owner={owner}"));
        Vec::new()
    }
    fn delete_manifests(&self, manifests: &[Manifest]) -> Vec<Applied> {
        self.log(format!("delete {}", manifests.len()));
        Vec::new()
    }
    fn snapshot_list(&self) -> Result<Vec<SnapshotRecord>, Error> {
        self.log("snapshot_list".into());
        Ok(Vec::new())
    }
    fn image_list(&self) -> Result<Vec<ImageRecord>, Error> {
        self.log("image_list".into());
        Ok(Vec::new())
    }
    fn vm_kill(&self, query: &str) -> Result<VmRecord, Error> {
        self.log(format!("vm_kill {query}"));
        Ok(vm(query))
    }
    fn vm_logs(&self, query: &str, _opts: &ignis_core::vm::LogOptions) -> Result<Vec<u8>, Error> {
        self.log(format!("vm_logs {query}"));
        Ok(b"line 1\nline 2\n".to_vec())
    }
    fn vm_snapshot(&self, query: &str, name: Option<&str>) -> Result<SnapshotRecord, Error> {
        self.log(format!("vm_snapshot {query} name={name:?}"));
        Err(Error::new(ErrorKind::Conflict, "VM x is not running"))
    }
    fn vm_fork(
        &self,
        source: &str,
        opts: &ignis_core::snapshot::ForkOptions,
    ) -> Result<(SnapshotRecord, Vec<VmRecord>), Error> {
        self.log(format!(
            "vm_fork {source} count={} prefix={:?} rm={}",
            opts.count, opts.name_prefix, opts.auto_remove
        ));
        Err(Error::new(
            ErrorKind::Invalid,
            "-n 0: want 1 to 1000 clones",
        ))
    }
}

/// Serves the router over the fake on 127.0.0.1 and returns a client.
fn serve(fake: Arc<Fake>) -> Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let router = ignis_daemon::api_router(fake);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, router).await.unwrap();
        });
    });
    Client::new(&format!("tcp://{addr}"), None).unwrap()
}

fn problem(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn paths_queries_and_errors_map_to_calls_and_problems() {
    let fake = Arc::new(Fake::default());
    let c = serve(fake.clone());

    let r = c.request("GET", "/v1/vms?all=true", None).unwrap();
    assert_eq!(r.status, 200);
    let vms: Vec<VmRecord> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(c.request("GET", "/v1/vms", None).unwrap().status, 200);
    assert_eq!(fake.calls(), ["vm_list all=true", "vm_list all=false"]);

    // Percent-encoded names reach the service decoded.
    let r = c.request("GET", "/v1/vms/a%20b%2Fc", None).unwrap();
    assert_eq!(r.status, 200);
    let r = c.request("GET", "/v1/vms/nope", None).unwrap();
    assert_eq!(r.status, 404);
    let p = problem(&r.body);
    assert_eq!(p["status"], 404);
    assert_eq!(p["detail"], "no vm named 'nope'");
    assert_eq!(fake.calls(), ["vm_inspect a b/c", "vm_inspect nope"]);

    // Queries with defaults and values.
    c.request("POST", "/v1/vms/w/stop", None).unwrap();
    c.request("POST", "/v1/vms/w/stop?time=3", None).unwrap();
    c.request("POST", "/v1/vms/w/start", None).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "vm_stop w timeout=the VM's",
            "vm_stop w timeout=3",
            "vm_start w wait=true"
        ]
    );
    let r = c.request("POST", "/v1/vms/w/stop?time=soon", None).unwrap();
    assert_eq!(r.status, 400, "a bad query is the client's error");
    assert!(fake.calls().is_empty(), "and never reaches the service");

    // Error kinds become statuses.
    let r = c.request("DELETE", "/v1/vms/x?force=false", None).unwrap();
    assert_eq!(r.status, 409);
    let r = c.request("GET", "/v1/manifests/vms/x", None).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(problem(&r.body)["title"], "Internal error");
    assert_eq!(fake.calls(), ["vm_remove x force=false", "vm_manifest x"]);

    // Kill, logs (text), snapshot and fork: parameters reach the service.
    assert_eq!(
        c.request("POST", "/v1/vms/k/kill", None).unwrap().status,
        200
    );
    let r = c.request("GET", "/v1/vms/k/logs", None).unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"line 1\nline 2\n"[..])
    );
    assert_eq!(
        c.request("POST", "/v1/vms/k/snapshot?name=s1", None)
            .unwrap()
            .status,
        409
    );
    assert_eq!(
        c.request(
            "POST",
            "/v1/snapshots/s1/fork?count=5&prefix=web&rm=true",
            None
        )
        .unwrap()
        .status,
        400
    );
    c.request("POST", "/v1/snapshots/s1/fork", None).unwrap();
    assert_eq!(
        fake.calls(),
        [
            "vm_kill k",
            "vm_logs k",
            "vm_snapshot k name=Some(\"s1\")",
            "vm_fork s1 count=5 prefix=Some(\"web\") rm=true",
            "vm_fork s1 count=1 prefix=None rm=false"
        ]
    );

    // Unknown endpoints: a problem, not an empty 404.
    let r = c.request("GET", "/v2/whatever", None).unwrap();
    assert_eq!(r.status, 404);
    assert!(problem(&r.body)["detail"]
        .as_str()
        .unwrap()
        .contains("openapi"));
}

#[test]
fn apply_bodies_are_parsed_and_validated_before_the_service() {
    let fake = Arc::new(Fake::default());
    let c = serve(fake.clone());
    let yaml = "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: web}\nspec: {image: nginx}\n---\napiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: db}\nspec: {image: pg, cpus: 2}\n";
    let r = c
        .request(
            "POST",
            "/v1/apply",
            Some((yaml.as_bytes().to_vec(), "application/yaml")),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(fake.calls(), ["apply web,db owner=api"]);

    let bad = "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: web}\nspec: {image: nginx, cpuz: 2}\n";
    let r = c
        .request(
            "POST",
            "/v1/apply",
            Some((bad.as_bytes().to_vec(), "application/yaml")),
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        problem(&r.body)["detail"]
            .as_str()
            .unwrap()
            .contains("cpuz"),
        "the unknown field is named"
    );
    let huge = vec![b'#'; (1 << 20) + 10];
    let r = c
        .request("POST", "/v1/apply", Some((huge, "application/yaml")))
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(problem(&r.body)["title"], "Too large");
    let r = c
        .request(
            "POST",
            "/v1/apply",
            Some((vec![0xff, 0xfe, b'a'], "application/yaml")),
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(problem(&r.body)["detail"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
    assert!(
        fake.calls().is_empty(),
        "nothing invalid reached the service"
    );
}

/// Bounded property test: 500 mutated bodies; each gets a 2xx (and reaches
/// the service once) or a 4xx (and does not); never a 5xx.
#[test]
fn random_apply_bodies_never_5xx_and_reach_the_service_only_when_valid() {
    let fake = Arc::new(Fake::default());
    let c = serve(fake.clone());
    let seed = "apiVersion: ignis.dev/v1alpha1\nkind: VM\nmetadata: {name: web, labels: {a: b}}\nspec: {image: nginx, cpus: 2, memory: 256MB, network: {ports: [\"8080:80\"]}}\n";
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..500 {
        let mut b = seed.as_bytes().to_vec();
        for _ in 0..(next() % 6 + 1) {
            let at = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[at] = (next() % 256) as u8,
                1 => {
                    b.remove(at);
                }
                _ => b.insert(at, b"{}[]:,-&*!\n \""[(next() % 13) as usize]),
            }
        }
        let r = c
            .request("POST", "/v1/apply", Some((b.clone(), "application/yaml")))
            .unwrap();
        let calls = fake.calls();
        assert!(
            r.status < 500,
            "input {i} got {}: {:?}",
            r.status,
            String::from_utf8_lossy(&b)
        );
        if (200..300).contains(&r.status) {
            assert_eq!(calls.len(), 1, "input {i}");
        } else {
            assert!(calls.is_empty(), "input {i} reached the service: {calls:?}");
            assert_eq!(problem(&r.body)["status"], r.status);
        }
    }
}

/// The operation of `openapi.json` that serves `method path` (templates
/// like `{name}` match one segment).
fn declared_statuses(api: &serde_json::Value, method: &str, path: &str) -> Vec<String> {
    let path = path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    for (tpl, item) in api["paths"].as_object().unwrap() {
        let t: Vec<&str> = tpl.split('/').collect();
        let same = t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(a, b)| a.starts_with('{') || a == b);
        if same {
            if let Some(op) = item.get(method.to_lowercase()) {
                return op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
            }
        }
    }
    panic!("{method} {path} is not in openapi.json");
}

#[test]
fn rejected_requests_are_problems_with_declared_statuses() {
    let api: serde_json::Value =
        serde_json::from_str(include_str!("../../../api/openapi.json")).unwrap();
    let fake = Arc::new(Fake::default());
    let c = serve(fake.clone());
    let cases: &[(&str, &str, Option<&[u8]>, u16)] = &[
        // Query strings the types refuse: problem+json, not axum's text.
        ("DELETE", "/v1/vms/x?force=", None, 400),
        ("POST", "/v1/vms/w/stop?time=-1", None, 400),
        ("POST", "/v1/vms/w/stop?time=soon", None, 400),
        ("GET", "/v1/vms?all=maybe", None, 400),
        ("POST", "/v1/snapshots/s1/fork?count=x", None, 400),
        ("GET", "/v1/vms/x/logs?tail=many", None, 400),
        ("GET", "/v1/vms/x/logs?since=yesterday", None, 400),
        // Empty bodies are a mistake, not "nothing to apply".
        ("POST", "/v1/apply", Some(b""), 400),
        ("POST", "/v1/delete", Some(b"# only a comment\n"), 400),
        // Service errors as before.
        ("GET", "/v1/vms/nope", None, 404),
        ("DELETE", "/v1/vms/x?force=false", None, 409),
        ("GET", "/v1/manifests/vms/x", None, 500),
        // A service without stats says so.
        ("GET", "/v1/vms/x/stats", None, 503),
    ];
    for (method, path, body, want) in cases {
        let r = c
            .request(method, path, body.map(|b| (b.to_vec(), "application/yaml")))
            .unwrap();
        assert_eq!(
            r.status,
            *want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not problem+json ({e}): {:?}",
                String::from_utf8_lossy(&r.body)
            )
        });
        assert_eq!(p["status"], *want, "{method} {path}: {p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
        let declared = declared_statuses(&api, method, path);
        assert!(
            declared.contains(&want.to_string()),
            "{method} {path} answers {want}, openapi.json declares {declared:?}"
        );
    }
    // None of the refused requests reached the service.
    let calls = fake.calls();
    assert_eq!(
        calls,
        [
            "vm_inspect nope",
            "vm_remove x force=false",
            "vm_manifest x"
        ],
        "only the valid requests reached the service"
    );
    // The schema carries the constraint the handler enforces.
    assert_eq!(
        api["paths"]["/v1/vms/{name}/stop"]["parameters"][1]["schema"]["minimum"],
        0
    );
}
