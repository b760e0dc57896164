//! The HTTP API (issue 3).
