//! Links the system libespeak-ng (Debian `libespeak-ng-dev`) dynamically.
//!
//! The FFI surface we use is a handful of functions declared by hand in
//! `src/espeak.rs`, so no bindgen or pkg-config is needed.

fn main() {
    println!("cargo:rustc-link-lib=dylib=espeak-ng");
    println!("cargo:rerun-if-changed=build.rs");
}
