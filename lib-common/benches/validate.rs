//! `cargo bench -p lib-common`: time the whole validation (JSON parse, schema, semantic rules,
//! plan and dependency order) of a generated configuration of 1,000 containers with template
//! chains. Prints the median and worst of several runs; the goal is well under 50 ms.

use std::path::Path;
use std::time::{Duration, Instant};

use lib_common::plan;
use lib_common::validate::{Documents, Schema, check_documents};
use serde_json::{Value, json};

const CONTAINERS: u32 = 1_000;
/// Template chains: 8 chains of 5 templates (each cloned from the previous).
const CHAINS: u32 = 8;
const DEPTH: u32 = 5;
const RUNS: usize = 15;

fn ct(i: u32, name: String) -> Value {
    json!({
        "name": name,
        "memory_mb": 2048,
        "cores": 2,
        "template": "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "storage_pool": "lxc-disks",
        "storage_size_gb": 32,
        "network_config": {
            "name": "eth0",
            "bridge": "vmbr0",
            "ip": format!("10.{}.{}.{}/16", i / 65536, (i / 256) % 256, i % 256),
            "gw": "10.0.0.1"
        },
        "mac_address": format!("52:54:00:{:02X}:{:02X}:{:02X}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "gpu_assignment": "none",
        "portainer_role": "none",
        "unprivileged": true
    })
}

/// 40 templates in 8 chains (GPU / Docker / vLLM capabilities vary along a chain), then
/// standard containers: every third names its source explicitly, the rest get one chosen.
fn generate() -> Value {
    let mut cts = serde_json::Map::new();
    let mut id = 1000;
    let mut templates = Vec::new();
    for chain in 0..CHAINS {
        let mut prev: Option<u32> = None;
        for depth in 0..DEPTH {
            let mut t = ct(id, format!("tpl-{chain}-{depth}"));
            t["is_template"] = json!(true);
            t["template_snapshot_name"] = json!(format!("snap-{depth}"));
            if depth >= 1 {
                t["features"] = json!("nesting=1");
            }
            if depth >= 2 && chain % 2 == 0 {
                t["gpu_assignment"] = json!("0,1");
            }
            if depth >= 3 && chain % 2 == 0 {
                t["vllm_model"] = json!("org/model");
                t["vllm_tensor_parallel_size"] = json!(2);
            }
            if let Some(p) = prev {
                t["clone_from_template_ctid"] = json!(p.to_string());
            }
            cts.insert(id.to_string(), t);
            templates.push(id);
            prev = Some(id);
            id += 1;
        }
    }
    let mut n = 0;
    while cts.len() < CONTAINERS as usize {
        let mut c = ct(id, format!("app-{n}"));
        c["features"] = json!(if n % 2 == 0 { "nesting=1,keyctl=1" } else { "" });
        if n % 5 == 0 {
            c["gpu_assignment"] = json!("0");
        }
        if n % 3 == 0 {
            let src = templates[n as usize % templates.len()];
            c["clone_from_template_ctid"] = json!(src.to_string());
        }
        cts.insert(id.to_string(), c);
        id += 1;
        n += 1;
    }
    json!({
        "$schema": "/usr/local/phoenix_hypervisor/etc/phoenix_lxc_configs.schema.json",
        "nvidia_driver_version": "580.76.05",
        "nvidia_repo_url": "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/",
        "nvidia_runfile_url": "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run",
        "lxc_configs": cts
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let hv_text = std::fs::read_to_string(root.join("etc/phoenix_hypervisor_config.json")).unwrap();
    let lxc_text = serde_json::to_string_pretty(&generate()).unwrap();
    let host_root = std::env::temp_dir().join("phoenix-bench-no-host");

    let t = Instant::now();
    let hv_schema = Schema::embedded_hypervisor();
    let lxc_schema = Schema::embedded_lxc();
    let compile = t.elapsed();

    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let hv: Value = serde_json::from_str(&hv_text).unwrap();
        let lxc: Value = serde_json::from_str(&lxc_text).unwrap();
        let out = check_documents(
            &Documents {
                hypervisor_path: Path::new("hv.json"),
                hypervisor: Some(&hv),
                lxc_path: Path::new("lxc.json"),
                lxc: Some(&lxc),
            },
            Some(&hv_schema),
            Some(&lxc_schema),
            &host_root,
        );
        let configs = out.configs.expect("the generated config types");
        let plan = plan::plan(&configs.lxc);
        let order = plan.order();
        times.push(t.elapsed());
        let errors: Vec<_> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(
            errors.is_empty(),
            "generated config is invalid: {errors:#?}"
        );
        assert_eq!(order.len(), CONTAINERS as usize);
    }
    times.sort();
    println!(
        "validate: {CONTAINERS} containers ({} templates in {CHAINS} chains), {} bytes of JSON",
        CHAINS * DEPTH,
        lxc_text.len()
    );
    println!(
        "  schema compile (once):                     {}",
        ms(compile)
    );
    println!(
        "  parse + schema + semantic + plan + order:  median {}, worst {} ({RUNS} runs)",
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
}
