//! The `e2e` test binary lives in `main.rs`; see the README section "Tests".
