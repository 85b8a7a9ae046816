//! Shard workers over an OME-Zarr volume, through `segment-run predict --shard I/N`
//! (no scheduler, no Python): N shards run in any order fill the same output bytes as
//! one process; a shard run again skips its finished blocks; a worker killed mid-run and
//! restarted completes the output, again bit-identical; another run is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use skipseg_runtime::io::zarr::zarrs;
use zarrs::array::{ArrayBuilder, data_type};
use zarrs::filesystem::FilesystemStore;

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "segment-run failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A synthetic EM-like volume (bright cells, dark curved membranes, noise) as a Zarr v3
/// OME-NGFF 0.5 image: `depth` slices of `h` x `w`, chunks (1, 64, 48).
fn make_volume(dir: &Path, depth: u64, h: u64, w: u64) -> PathBuf {
    let root = dir.join("in.zarr");
    let store = Arc::new(FilesystemStore::new(&root).expect("store"));
    let array = ArrayBuilder::new(vec![depth, h, w], vec![1, 64, 48], data_type::uint8(), 0u8)
        .dimension_names(["z", "y", "x"].into())
        .build(store.clone(), "/0")
        .expect("array");
    array.store_metadata().expect("metadata");
    let mut px = Vec::with_capacity((depth * h * w) as usize);
    for z in 0..depth {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f32, x as f32 + 3.0 * z as f32);
                let membrane = ((fy * 0.11 + (fx * 0.05).sin() * 3.0).sin()
                    * (fx * 0.09 + (fy * 0.07).cos() * 2.0).sin())
                .abs()
                    < 0.12;
                let noise = ((y * 131 + x * 71 + z * 17) % 29) as f32 - 14.0;
                px.push(((if membrane { 60.0 } else { 190.0 }) + noise) as u8);
            }
        }
    }
    array
        .store_array_subset(&[0..depth, 0..h, 0..w], px.as_slice())
        .expect("pixels");
    // a second level (half size in y and x): the output gets it too, filled by the last
    // worker; its pixels are not read
    let half = ArrayBuilder::new(
        vec![depth, h.div_ceil(2), w.div_ceil(2)],
        vec![1, 64, 48],
        data_type::uint8(),
        0u8,
    )
    .dimension_names(["z", "y", "x"].into())
    .build(store.clone(), "/1")
    .expect("array");
    half.store_metadata().expect("metadata");
    let group = serde_json::json!({
        "zarr_format": 3, "node_type": "group",
        "attributes": {"ome": {"version": "0.5", "multiscales": [{
            "axes": [{"name": "z", "type": "space"}, {"name": "y", "type": "space"},
                     {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations":
                [{"type": "scale", "scale": [40.0, 4.0, 4.0]}]},
                {"path": "1", "coordinateTransformations":
                [{"type": "scale", "scale": [40.0, 8.0, 8.0]}]}]}]}}});
    std::fs::write(root.join("zarr.json"), group.to_string()).expect("group");
    root
}

/// Every file of a store but the worker state in `.skipseg/`, with its bytes.
fn store_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).expect("list") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(base)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".skipseg") {
                continue;
            }
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn assert_same_store(a: &Path, b: &Path) {
    let (fa, fb) = (store_files(a), store_files(b));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "the stores hold other files");
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(
            x == y,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

const OPTS: [&str; 6] = ["--tile", "64", "--halo", "32", "--tta", "none"];

/// `segment-run predict INPUT -o OUTPUT` with the test options and `extra`, not started.
fn predict_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segment-run"));
    c.arg("predict").arg(input).arg("-o").arg(output);
    c.args(OPTS).args(extra);
    c
}

fn predict(input: &Path, output: &Path, extra: &[&str]) -> Output {
    predict_command(input, output, extra)
        .output()
        .expect("segment-run runs")
}

#[test]
fn shards_in_any_order_equal_one_process_and_resume_skips_finished_blocks() {
    let dir = common::tmp("zarr-shards");
    let input = make_volume(&dir, 3, 150, 170);
    let single = dir.join("single.zarr");
    ok(&predict(&input, &single, &[]));
    // blocks of one 64-row chunk x two 48-column chunks (the tile core, 64, rounded up
    // to whole chunks): 3 slices x 3 block rows x 2 block columns = 18 blocks
    let files = store_files(&single);
    assert!(files.len() > 20, "{} files", files.len());
    let sharded = dir.join("sharded.zarr");
    for (n, i) in [2, 0, 1].into_iter().enumerate() {
        let said = ok(&predict(&input, &sharded, &["--shard", &format!("{i}/3")]));
        // the worker that completes the output fills the half-size level
        assert_eq!(
            said.contains("1 lower-resolution levels filled"),
            n == 2,
            "{said}"
        );
    }
    assert!(
        sharded.join("1/c/2/1/1").is_file(),
        "the half-size level has chunks"
    );
    assert_same_store(&single, &sharded);
    // a shard run again computes nothing and rewrites nothing
    let chunk = dir.join("sharded.zarr/0/c/1/1/1");
    let before = std::fs::metadata(&chunk)
        .expect("chunk")
        .modified()
        .expect("mtime");
    let again = ok(&predict(&input, &sharded, &["--shard", "1/3"]));
    assert!(
        again.contains(": 0 of 6 blocks in this shard computed, 6 already done"),
        "{again}"
    );
    let after = std::fs::metadata(&chunk)
        .expect("chunk")
        .modified()
        .expect("mtime");
    assert_eq!(before, after, "a finished chunk was written again");
    // any other shard count resumes the same output: every block is done (shard 3/4
    // of 18 blocks: numbers 13..18)
    let n4 = ok(&predict(&input, &sharded, &["--shard", "3/4"]));
    assert!(
        n4.contains(": 0 of 5 blocks in this shard computed, 5 already done"),
        "{n4}"
    );
    // the same output with other options is refused, naming what differs
    let other = predict(&input, &sharded, &["--float"]);
    assert_eq!(other.status.code(), Some(2));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("another run") && err.contains("float"),
        "{err}"
    );
    assert_same_store(&single, &sharded);
}

#[test]
fn shards_started_together_on_a_new_output_all_succeed() {
    let dir = common::tmp("zarr-together");
    let input = make_volume(&dir, 2, 140, 120);
    let single = dir.join("single.zarr");
    ok(&predict(&input, &single, &[]));
    // what a job array does: every worker creates the output at once
    let together = dir.join("together.zarr");
    let workers: Vec<_> = (0..4)
        .map(|i| {
            predict_command(&input, &together, &["--shard", &format!("{i}/4")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_same_store(&single, &together);
}

#[test]
fn an_output_that_is_not_a_workers_is_refused_and_left_alone() {
    let dir = common::tmp("zarr-foreign");
    let input = make_volume(&dir, 1, 70, 60);
    let before = store_files(&input);
    // -o naming the input itself, by mistake
    let o = predict(&input, &input, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("in.zarr") && err.contains("not made by segment-run"),
        "{err}"
    );
    assert!(store_files(&input) == before, "the input was modified");
    assert!(!input.join(".skipseg").exists());
}

#[test]
fn a_block_lost_in_a_crash_is_computed_again() {
    let dir = common::tmp("zarr-crash");
    let input = make_volume(&dir, 2, 130, 100);
    let single = dir.join("single.zarr");
    ok(&predict(&input, &single, &[]));
    // a crash after the last block's chunks were written but before its log line, and
    // in the middle of writing a chunk of another block (a temporary file, the chunk
    // itself gone), and a torn log line
    let out = dir.join("crashed.zarr");
    ok(&predict(&input, &out, &[]));
    let log = out.join(".skipseg/done-0-of-1.log");
    let text = std::fs::read_to_string(&log).expect("log");
    let mut lines: Vec<&str> = text.lines().collect();
    // 2 slices x 3 block rows (130 / 64) x 2 block columns (100 / 96)
    assert_eq!(lines.len(), 12);
    let lost = lines.remove(3);
    lines.pop();
    let torn = format!("{}\n1", lines.join("\n"));
    std::fs::write(&log, torn).expect("log");
    // block 3 = slice 0, block row 1, block column 1: rows 64.., columns 96..
    let chunk = out.join("0/c/0/1/2");
    std::fs::rename(&chunk, out.join("0/c/0/1/.2.tmp999")).expect("half-written chunk");
    assert_eq!(lost, "3");
    let resumed = ok(&predict(&input, &out, &[]));
    assert!(
        resumed.contains(": 2 of 12 blocks in this shard computed, 10 already done"),
        "{resumed}"
    );
    std::fs::remove_file(out.join("0/c/0/1/.2.tmp999")).expect("the stale temporary file");
    assert_same_store(&single, &out);
}

#[test]
fn a_killed_worker_restarted_completes_the_same_output() {
    let dir = common::tmp("zarr-kill");
    let input = make_volume(&dir, 6, 140, 150);
    let single = dir.join("single.zarr");
    ok(&predict(&input, &single, &[]));
    let out = dir.join("killed.zarr");
    let mut child = predict_command(&input, &out, &[])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let log = out.join(".skipseg/done-0-of-1.log");
    let started = std::time::Instant::now();
    let mut killed_at = None;
    while started.elapsed().as_secs() < 120 {
        let lines = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 2 {
            let _ = child.kill();
            killed_at = Some(lines);
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.wait();
    eprintln!("worker killed after {killed_at:?} logged blocks (of 6 x 3 x 2)");
    ok(&predict(&input, &out, &[]));
    // a kill can leave a temporary chunk file (never a chunk name): remove those, then
    // the chunks must equal the uninterrupted run's
    fn remove_temporaries(dir: &Path) {
        for e in std::fs::read_dir(dir).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                remove_temporaries(&p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
            {
                std::fs::remove_file(&p).expect("remove");
            }
        }
    }
    remove_temporaries(&out);
    assert_same_store(&single, &out);
}
