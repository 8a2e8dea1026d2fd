"""Passkeys and security keys (WebAuthn Level 3) as a second factor and for passwordless sign-in:
the relying party (relying_party), the ceremonies' challenges (challenges), the stored credentials
(credentials), the browser's JSON answers (responses), refusals (errors), and the ceremonies
themselves (service)."""
