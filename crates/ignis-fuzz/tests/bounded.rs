//! A bounded fuzz run of every target in every `cargo test`: seeded
//! mutations (bit flips, byte sets, cuts, duplications, insertions,
//! splices) of valid inputs, for IGNIS_FUZZ_SECS seconds per target
//! (default 4). Deterministic per seed (IGNIS_FUZZ_SEED), so a failure
//! reproduces; the seed and the input size are in the panic message.
//! Coverage-guided runs: `cargo +nightly fuzz run <target>` in fuzz/.

use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(8) {
        match rng.below(7) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0, 0xff, 0x7f, 0x80, b'\n', b'/', b'.', b':'][rng.below(8)];
            }
            2 if !d.is_empty() => {
                let a = rng.below(d.len());
                let b = (a + rng.below(64)).min(d.len());
                d.drain(a..b);
            }
            3 if !d.is_empty() && d.len() < 1 << 20 => {
                let a = rng.below(d.len());
                let b = (a + rng.below(512)).min(d.len());
                let piece = d[a..b].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, piece);
            }
            4 => {
                let at = rng.below(d.len() + 1);
                let n = rng.below(32);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            5 => d.truncate(rng.below(d.len() + 1)),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(d.len() + 1);
                let from = rng.below(other.len() + 1);
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
        }
    }
    d
}

fn run(name: &str, seeds: Vec<Vec<u8>>, target: fn(&[u8])) {
    let secs: u64 = std::env::var("IGNIS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("IGNIS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    for s in &seeds {
        target(s);
    }
    let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let input = mutate(&mut rng, &seeds);
        let r = std::panic::catch_unwind(|| target(&input));
        assert!(
            r.is_ok(),
            "{name}: input {n} (IGNIS_FUZZ_SEED={seed}, {} bytes: {:?}) panicked",
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(200)])
        );
        n += 1;
    }
    eprintln!("fuzz {name}: {n} inputs in {secs} s, no panic");
    assert!(n > 0);
}

#[test]
fn agent_frames() {
    use ignis_agent_proto::{encode, Kind};
    let mut stream = Vec::new();
    stream.extend(encode(Kind::Hello, 0, br#"{"version":1}"#));
    stream.extend(encode(Kind::Open, 1, br#"{"exec":{"argv":["sh"]}}"#));
    stream.extend(encode(Kind::Stdout, 1, b"hello"));
    stream.extend(encode(Kind::Exit, 1, br#"{"code":0}"#));
    run(
        "agent_frames",
        vec![stream, vec![0xff; 64]],
        ignis_fuzz::agent_frames,
    );
}

#[test]
fn image_json() {
    run(
        "image_json",
        vec![
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"Env":["A=1"],"WorkingDir":"/w","User":"1:2"},"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#.to_vec(),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":5,"platform":{"architecture":"amd64","os":"linux"}}]}"#.to_vec(),
            br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l/layer.tar"]}]"#.to_vec(),
        ],
        ignis_fuzz::image_json,
    );
}

#[test]
fn tar_layer() {
    use ignis_testkit::LayerBuilder;
    run(
        "tar_layer",
        vec![
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
                .symlink("bin", "usr/bin")
                .hardlink("etc/p2", "etc/passwd")
                .file("etc/.wh.gone", b"", 0o644)
                .build(),
            LayerBuilder::new()
                .dir("a", 0o700)
                .file("a/.wh..wh..opq", b"", 0o644)
                .file("a/b", &[7u8; 3000], 0o600)
                .build(),
        ],
        ignis_fuzz::tar_layer,
    );
}

const VM: &str = r#"apiVersion: ignis.dev/v1alpha1
kind: VM
metadata:
  name: web
  labels: {tier: front}
spec:
  image: nginx:1.27
  cpus: 2
  memory: 512MB
  network:
    ports: ["8080:80"]
  running: false
---
apiVersion: ignis.dev/v1alpha1
kind: Snapshot
metadata: {name: s}
spec: {vm: web}
"#;

const IGNITE: &str = r#"apiVersion: ignite.weave.works/v1alpha4
kind: VM
metadata:
  name: my-vm
spec:
  image:
    oci: weaveworks/ignite-ubuntu
  cpus: 2
  diskSize: 3GB
  memory: 800MB
  ssh: true
"#;

#[test]
fn yaml_manifests() {
    run(
        "yaml_manifests",
        vec![
            VM.as_bytes().to_vec(),
            IGNITE.as_bytes().to_vec(),
            b"a: &a [*a, *a]\nb: *a\n".to_vec(),
        ],
        ignis_fuzz::yaml_manifests,
    );
}

#[test]
fn api_body() {
    run(
        "api_body",
        vec![
            VM.as_bytes().to_vec(),
            br#"{"apiVersion":"ignis.dev/v1alpha1","kind":"VM","metadata":{"name":"j"},"spec":{"image":"x"}}"#.to_vec(),
        ],
        ignis_fuzz::api_body,
    );
}
