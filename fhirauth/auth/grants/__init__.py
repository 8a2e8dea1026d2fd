"""The token endpoint's grant types (RFC 6749 §4): one module per grant, registered by grant_type."""
