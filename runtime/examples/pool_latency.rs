//! What a parallel loop costs on a rayon pool when it is started from outside the pool
//! (the caller blocks, and a worker must wake it when the loop ends) and from one of the
//! pool's own threads (the caller takes part and steals back), after idle gaps of 0, 100
//! and 1000 us (the pool's threads fall asleep): the reason the engine runs its plan on a
//! thread of its pool (docs/PERFORMANCE.md).
//!
//!     cargo run --release -p skipseg-runtime --example pool_latency [-- THREADS]

use std::time::Instant;

use rayon::prelude::*;

/// About 4 us of arithmetic per task.
fn task() -> f64 {
    (0..2000).map(|i| (i as f64).sqrt()).sum()
}

fn median_us(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2] * 1e6
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot start {threads} threads: {e}");
            std::process::exit(1);
        }
    };
    const TASKS: usize = 8;
    const CALLS: usize = 300;
    let one_loop = || {
        (0..TASKS).into_par_iter().for_each(|_| {
            std::hint::black_box(task());
        })
    };
    let wait = |us: u64| {
        let started = Instant::now();
        while started.elapsed().as_micros() < us as u128 {
            std::hint::spin_loop();
        }
    };
    let started = Instant::now();
    for _ in 0..TASKS {
        std::hint::black_box(task());
    }
    let serial = started.elapsed().as_secs_f64() * 1e6;
    println!(
        "{TASKS} tasks of ~{:.1} us on {threads} threads; serial {serial:.1} us",
        serial / TASKS as f64
    );
    println!("| idle gap us | from outside the pool us | from a thread of the pool us |");
    println!("|---|---|---|");
    for gap in [0u64, 100, 1000] {
        let mut outside: Vec<f64> = (0..CALLS)
            .map(|_| {
                let s = Instant::now();
                pool.install(one_loop);
                let t = s.elapsed().as_secs_f64();
                wait(gap);
                t
            })
            .collect();
        let mut inside: Vec<f64> = pool.install(|| {
            (0..CALLS)
                .map(|_| {
                    let s = Instant::now();
                    pool.install(one_loop);
                    let t = s.elapsed().as_secs_f64();
                    wait(gap);
                    t
                })
                .collect()
        });
        println!(
            "| {gap} | {:.1} | {:.1} |",
            median_us(&mut outside),
            median_us(&mut inside)
        );
    }
}
