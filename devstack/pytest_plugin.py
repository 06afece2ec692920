"""pytest plugin of the devstack: session-scoped fixtures that start each real component once."""
