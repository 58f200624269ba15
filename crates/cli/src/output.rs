//! az's output formats and `--query`. Being written.
