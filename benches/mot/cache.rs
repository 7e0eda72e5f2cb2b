//! Benchmark 2: The last-record cache (dashmap, grouped keys, JSON bytes) vs a plain `HashMap` doing the
//! same inserts and comparisons, on one core.

use std::collections::HashMap;
use std::time::Instant;

use mot::actors::cache::LastRecordCache;
use mot::actors::instance_consul_state::instances;
use mot::topics::names::RegionName;

use crate::report::{Figure, Section};
use crate::Env;

/// For key `i`: its group, its key, and two different records (JSON of an InstanceInfo).
fn records(n: usize) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let region = RegionName::parse("production-us-west-2").unwrap();
    (0..n)
        .map(|i| {
            let state = crate::pipeline::consul_state(i);
            let mut info = instances(&region, &state).remove(0);
            let a = serde_json::to_vec(&info).unwrap();
            info.health = mot::models::instance::Health::Critical;
            let b = serde_json::to_vec(&info).unwrap();
            (format!("{}/{}", info.zone, info.service), info.key(), a, b)
        })
        .collect()
}

struct Measured {
    bytes_per_key: f64,
    diffs_per_sec: f64,
}

fn cache_run(data: &[(String, String, Vec<u8>, Vec<u8>)]) -> Measured {
    let before = crate::alloc::live();
    let cache = LastRecordCache::new();
    for (group, key, a, _) in data {
        cache.diff_group(group, vec![(key.clone(), a.clone())]);
    }
    let bytes = (crate::alloc::live() - before) as f64 / data.len() as f64;
    let started = Instant::now();
    let mut changed = 0usize;
    for (i, (group, key, a, b)) in data.iter().enumerate() {
        // Half the records are unchanged (a again), half change (b).
        let record = if i % 2 == 0 { a } else { b };
        changed += cache
            .diff_group(group, vec![(key.clone(), record.clone())])
            .len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(changed, data.len() / 2);
    drop(cache);
    Measured {
        bytes_per_key: bytes,
        diffs_per_sec: data.len() as f64 / elapsed,
    }
}

fn hashmap_run(data: &[(String, String, Vec<u8>, Vec<u8>)]) -> Measured {
    let before = crate::alloc::live();
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    let diff = |map: &mut HashMap<String, Vec<u8>>, key: String, record: Vec<u8>| -> usize {
        match map.get(&key) {
            Some(last) if *last == record => 0,
            _ => {
                map.insert(key, record);
                1
            }
        }
    };
    for (_, key, a, _) in data {
        diff(&mut map, key.clone(), a.clone());
    }
    let bytes = (crate::alloc::live() - before) as f64 / data.len() as f64;
    let started = Instant::now();
    let mut changed = 0usize;
    for (i, (_, key, a, b)) in data.iter().enumerate() {
        let record = if i % 2 == 0 { a } else { b };
        changed += diff(&mut map, key.clone(), record.clone());
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(changed, data.len() / 2);
    drop(map);
    Measured {
        bytes_per_key: bytes,
        diffs_per_sec: data.len() as f64 / elapsed,
    }
}

pub fn run(env: &Env) -> Section {
    let sizes: Vec<usize> = if env.quick {
        vec![1_000, 10_000]
    } else {
        vec![10_000, 100_000, 1_000_000]
    };
    let mut section = Section::new(
        "cache",
        "Last-record cache vs HashMap",
        "Each key is one instance (an InstanceInfo of about 400 bytes of JSON), one key per group \
         (zone/service). Fill the structure with every key, then diff every key once more: half \
         against the same record (unchanged), half against a changed one (published). The cache \
         does what agents do (`diff_group`: compare bytes, keep the record, track the group's keys \
         for deletions); the baseline is a `HashMap<String, Vec<u8>>` get-compare-insert. Both \
         take owned keys and records, as an agent hands them over. One thread; bytes per key from a \
         counting allocator (the record's own bytes included).",
    );
    let mut ratios = Vec::new();
    for n in sizes {
        let data = records(n);
        let (mut c_rate, mut c_bytes, mut h_rate, mut h_bytes) = (vec![], vec![], vec![], vec![]);
        for _ in 0..env.runs() {
            let c = cache_run(&data);
            c_rate.push(c.diffs_per_sec);
            c_bytes.push(c.bytes_per_key);
            let h = hashmap_run(&data);
            h_rate.push(h.diffs_per_sec);
            h_bytes.push(h.bytes_per_key);
        }
        let label = if n >= 1_000_000 {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{}k", n / 1000)
        };
        let cr = section.figure(Figure::new(
            format!("cache diffs, {label} keys"),
            "diffs/s",
            c_rate,
        ));
        let hr = section.figure(Figure::new(
            format!("HashMap diffs, {label} keys"),
            "diffs/s",
            h_rate,
        ));
        let cb = section.figure(Figure::new(
            format!("cache, {label} keys"),
            "bytes/key",
            c_bytes,
        ));
        let hb = section.figure(Figure::new(
            format!("HashMap, {label} keys"),
            "bytes/key",
            h_bytes,
        ));
        ratios.push((format!("cache / HashMap diffs/s, {label} keys"), cr, hr));
        ratios.push((format!("cache / HashMap bytes/key, {label} keys"), cb, hb));
    }
    for (name, a, b) in ratios {
        section.ratio(name, a, b);
    }
    section
}
