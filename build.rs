//! Build script: with the `openblas` feature, turn a missing system OpenBLAS into one clear
//! message naming the package to install, instead of a linker error at the end of the
//! build. Everything else (the `-lopenblas` flag, pkg-config, Homebrew paths) is
//! openblas-src's job; with any other feature set this script does nothing.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OPENBLAS_LIB_DIR");
    println!("cargo:rerun-if-env-changed=LIBRARY_PATH");
    if env::var_os("CARGO_FEATURE_OPENBLAS").is_none() || env::var_os("DOCS_RS").is_some() {
        return;
    }
    if find_openblas().is_none() {
        eprintln!(
            "\nerror: tapegrad's `openblas` feature needs the system OpenBLAS library, and it \
             was not found.\n\
             Install it:\n\
             \x20 Debian, Ubuntu:  apt-get install libopenblas-dev\n\
             \x20 Fedora:          dnf install openblas-devel\n\
             \x20 macOS:           brew install openblas\n\
             or point OPENBLAS_LIB_DIR at the directory holding libopenblas, or build without \
             `--features openblas` (the default build is pure Rust and needs no system \
             library).\n"
        );
        std::process::exit(1);
    }
}

/// The directory holding libopenblas, searched where package managers put it.
fn find_openblas() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in [
        "OPENBLAS_LIB_DIR",
        "LIBRARY_PATH",
        "LD_LIBRARY_PATH",
        "DYLD_LIBRARY_PATH",
    ] {
        if let Some(paths) = env::var_os(var) {
            dirs.extend(env::split_paths(&paths));
        }
    }
    let multiarch = format!(
        "{}-{}-{}",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default(),
        env::var("CARGO_CFG_TARGET_OS").unwrap_or_default(),
        env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default()
    );
    for base in ["/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib"] {
        dirs.push(PathBuf::from(base));
        dirs.push(Path::new(base).join(&multiarch));
        dirs.push(Path::new(base).join(&multiarch).join("openblas-pthread"));
        dirs.push(Path::new(base).join("openblas-pthread"));
    }
    dirs.extend(
        [
            "/opt/homebrew/opt/openblas/lib",
            "/usr/local/opt/openblas/lib",
            "/opt/local/lib",
        ]
        .map(PathBuf::from),
    );
    let names = [
        "libopenblas.so",
        "libopenblas.a",
        "libopenblas.dylib",
        "openblas.lib",
    ];
    dirs.into_iter()
        .find(|d| names.iter().any(|n| d.join(n).exists()))
}
