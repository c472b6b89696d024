//! The default build needs nothing from the system beyond the README's requirements (Rust and its C compiler
//! and linker): no libclang, no pkg-config library, no cmake. A dependency that would add such a build step
//! fails this test on the build for the machine here or for a board, before it fails a user's first command.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Every target the README builds for: this machine's kind and the boards.
const TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "armv7-unknown-linux-gnueabihf",
];

/// Build-time bridges to a system library or tool that the README's requirements do not name.
const NEVER: [(&str, &str); 2] = [
    ("bindgen", "runs libclang at build time"),
    ("clang-sys", "loads libclang at build time"),
];

/// What a build script reaches for when it builds or finds native code.
const NATIVE_BUILD_HELPERS: [&str; 6] = [
    "cc",
    "cmake",
    "pkg-config",
    "vcpkg",
    "system-deps",
    "autotools",
];

/// Packages that build native code, each checked to need only the C compiler (and why).
const REVIEWED: [(&str, &str); 6] = [
    (
        "aws-lc-sys",
        "rustls's cryptography for TLS to the broker: compiles its bundled AWS-LC C sources with the C \
         compiler (cmake and pkg-config only when asked for by its environment variables)",
    ),
    (
        "aws-lc-rs",
        "declares `links` for aws-lc-sys's library, which it builds itself",
    ),
    (
        "ring",
        "rustls-webpki's cryptography: compiles its bundled C and assembly with the C compiler",
    ),
    (
        "rayon-core",
        "declares `links` only so that two versions are never linked; no native library",
    ),
    (
        "openh264-sys2",
        "the RTSP source's H.264 decoder: compiles its bundled OpenH264 C++ sources with the C++ compiler (g++, \
         or the cross g++ for ARM, whose NEON assembly it also builds); on x86 it adds NASM assembly when `nasm` \
         is installed and quietly goes without it otherwise",
    ),
    (
        "tract-linalg",
        "tract's matrix kernels: assembles its own sources with the C compiler (the cross compiler for ARM)",
    ),
];

struct Tree {
    names: BTreeMap<String, String>,
    links: BTreeSet<String>,
    /// Package id -> (dependency id, is a build dependency), normal and build edges only.
    edges: BTreeMap<String, Vec<(String, bool)>>,
    root: String,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn tree(package: &Path, target: &str) -> Tree {
    let output = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            target,
        ])
        .current_dir(package)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata for {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let mut names = BTreeMap::new();
    let mut links = BTreeSet::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let id = package["id"].as_str().expect("id").to_string();
        if package["links"].is_string() {
            links.insert(id.clone());
        }
        names.insert(id, package["name"].as_str().expect("name").to_string());
    }
    let resolve = &metadata["resolve"];
    let mut edges = BTreeMap::new();
    for node in resolve["nodes"].as_array().expect("resolve nodes") {
        let mut out = Vec::new();
        for dep in node["deps"].as_array().expect("deps") {
            let kinds: Vec<&str> = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .map(|kind| kind["kind"].as_str().unwrap_or("normal"))
                .collect();
            // Dev-dependencies build only for our own tests, never for a user's first command.
            if kinds.iter().any(|&k| k == "normal" || k == "build") {
                let build_only = kinds.iter().all(|&k| k == "build");
                out.push((dep["pkg"].as_str().expect("pkg").to_string(), build_only));
            }
        }
        edges.insert(node["id"].as_str().expect("node id").to_string(), out);
    }
    let root = resolve["root"].as_str().expect("root package").to_string();
    Tree {
        names,
        links,
        edges,
        root,
    }
}

/// Packages reachable from the root, each with the chain of names that reaches it.
fn reachable(tree: &Tree) -> BTreeMap<String, Vec<String>> {
    let mut chains = BTreeMap::from([(tree.root.clone(), vec![tree.names[&tree.root].clone()])]);
    let mut queue = VecDeque::from([tree.root.clone()]);
    while let Some(id) = queue.pop_front() {
        for (dep, _) in &tree.edges[&id] {
            if !chains.contains_key(dep) {
                let mut chain = chains[&id].clone();
                chain.push(tree.names[dep].clone());
                chains.insert(dep.clone(), chain);
                queue.push_back(dep.clone());
            }
        }
    }
    chains
}

fn problems(package: &Path, target: &str) -> Vec<String> {
    let tree = tree(package, target);
    let mut found = Vec::new();
    for (id, chain) in reachable(&tree) {
        let name = &tree.names[&id];
        if let Some((_, why)) = NEVER.iter().find(|(never, _)| never == name) {
            found.push(format!("{target}: {} ({name} {why})", chain.join(" -> ")));
        }
        let helpers: Vec<&str> = tree.edges[&id]
            .iter()
            .filter(|(_, build)| *build)
            .map(|(dep, _)| tree.names[dep].as_str())
            .filter(|dep| NATIVE_BUILD_HELPERS.contains(dep))
            .collect();
        let native = tree.links.contains(&id) || !helpers.is_empty();
        if native && !REVIEWED.iter().any(|(reviewed, _)| reviewed == name) {
            found.push(format!(
                "{target}: {} builds native code (links: {}, build helpers: {helpers:?}): find what its build \
                 needs from the system, name it in the README's requirements, and add it to REVIEWED here",
                chain.join(" -> "),
                tree.links.contains(&id)
            ));
        }
    }
    found
}

#[test]
fn the_default_build_needs_no_system_library_beyond_the_readme() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found: Vec<String> = TARGETS
        .iter()
        .flat_map(|target| problems(ours, target))
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_build_step_that_needs_libclang() {
    // nokhwa's V4L2 bindings (v4l2-sys-mit) ran bindgen, which is why V4L2 is now declared in Rust.
    // The same dependency in a throwaway package must be caught, with the chain that pulls it in.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("needs-libclang");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("scratch package");
    std::fs::write(dir.join("src/lib.rs"), "").expect("lib.rs");
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"needs-libclang\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nv4l2-sys-mit = \"=0.3.0\"\n\n[workspace]\n",
    )
    .expect("Cargo.toml");
    let status = cargo()
        .arg("generate-lockfile")
        .current_dir(&dir)
        .status()
        .expect("cargo generate-lockfile");
    assert!(
        status.success(),
        "cargo generate-lockfile in {}",
        dir.display()
    );
    let found = problems(&dir, TARGETS[0]);
    assert!(
        found
            .iter()
            .any(|p| p.contains("needs-libclang -> v4l2-sys-mit -> bindgen (bindgen runs libclang")),
        "{found:#?}"
    );
}
