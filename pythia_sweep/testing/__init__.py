"""Stand-ins for what the tests and the offline demo cannot reach: a local Hub cache writer, the demo model
family, and fault injection. Nothing on a sweep's production path imports this package."""
