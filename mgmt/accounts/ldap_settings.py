"""Directory settings; filled in by mgmt/accounts/ldap.py's documentation."""
