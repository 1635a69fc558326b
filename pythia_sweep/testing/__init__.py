"""Stand-ins for what the tests and the offline demo cannot reach: a local Hub cache writer, a Hub-compatible
HTTP server on 127.0.0.1, the demo model family, and fault injection. Nothing on a sweep's production path
imports this package."""
