"""HTTP API: routes take only the Annotated dependencies of ``deps``; errors become problem+json."""
