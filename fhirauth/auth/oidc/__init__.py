"""OpenID Connect Core 1.0 on top of the OAuth server: ID tokens and their claims, the response types
and modes of /auth/authorize, and the sign-in rules of prompt and max_age."""
