"""Security adapters: the access policy, user authentication, admission, the audit trail.

`policy` is the one pure permission object (DESIGN "Permissions"); `passwords` and `tokens`
check scrypt-hashed passcodes and JSON Web Tokens behind `authenticate`
(`ports.Authenticator`); `gate` admits associations (`ports.AssociationGate`); `throttle`
slows down repeated failures; `audit` writes the audit trail (`ports.Audit`). The
composition root (``minipacs.app.security``) builds them from the configuration.
"""
