//! A tiny harness: an emulator per test process, a scratch folder per test, and `secep` run as a user runs it.
