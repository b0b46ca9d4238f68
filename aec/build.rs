//! Links the system libspeexdsp (Debian: libspeexdsp-dev, pkg-config name `speexdsp`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-lib=dylib=speexdsp");
}
