//! What a panic means in the fuzz targets that reach tract. A panic in skipseg's own
//! code is a bug: abort, so libFuzzer keeps the input. A panic inside tract is turned
//! into an error by the library (`Segmenter` runs tract under catch_unwind, the C entry
//! points catch everything): note it and go on. A panic that escapes the library still
//! aborts in libFuzzer's harness.

pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let site = info.location().map(|l| l.file().to_string()).unwrap_or_default();
        if site.contains("runtime/src/") {
            eprintln!("panic in skipseg: {info}");
            std::process::abort();
        }
        eprintln!("(caught by the library) panic in a dependency: {info}");
    }));
}
