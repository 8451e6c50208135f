"""Internal plumbing shared by every jopt transform (not public API)."""
