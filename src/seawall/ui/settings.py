"""The web UI's settings (``ui`` in seawall's settings file): sessions, cookies and OIDC sign-in.

>>> UISettings(oidc={"issuer": "https://login.example.org", "client_id": "seawall",
...                  "roles": {"ops@example.org": "admin", "@example.org": "reviewer"}})  # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

#: What a signed-in person may do: reviewers read (dashboard, users, audit), admins also act.
Role = Literal["reviewer", "admin"]
ROLES: tuple[Role, ...] = ("reviewer", "admin")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OIDCSettings(BaseModel):
    """Sign-in with an OpenID Connect provider (Keycloak, Authentik, Google, Entra ID, Dex, ...).

    Register seawall at the provider as a confidential web client whose redirect URI is
    ``<public_url>/ui/auth/callback``. Who may sign in, and as what, is the ``roles`` allow-list.
    """

    name: str = Field("single sign-on", description="What the sign-in button calls the provider.")
    issuer: str = Field(
        description=(
            "The provider's issuer URL; its discovery document is ISSUER/.well-known/openid-configuration. "
            "https, or http on a loopback address only (development)."
        )
    )
    client_id: str = Field(description="The client id seawall is registered with.")
    client_secret: SecretStr | None = Field(None, description="The client secret (confidential clients).")
    scope: str = Field("openid email profile", description="Scopes requested; must include openid and email.")
    roles: dict[str, Role] = Field(
        default_factory=dict,
        description=(
            "Allow-list: an e-mail address, or '@domain' for every address of a domain, mapped to "
            "'reviewer' or 'admin'. An exact address wins over its domain; anyone else is refused."
        ),
    )
    require_verified_email: bool = Field(
        True, description="Refuse identities whose provider does not say email_verified: true."
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of each call to the provider.")
    allow_private_hosts: bool = Field(
        False,
        description=(
            "Let the sign-in reach a provider whose hosts are or resolve to a loopback or private "
            "address (a provider inside your network, or on this machine in development): the discovery "
            "document, the keys, the token exchange and userinfo. Off: such an endpoint is refused, as "
            "for gateway.user_tokens."
        ),
    )

    @field_validator("issuer")
    @classmethod
    def _secure_issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
            return value.rstrip("/")
        raise ValueError("ui.oidc.issuer must be an https:// URL (http only on a loopback address)")

    @field_validator("roles")
    @classmethod
    def _lower_case(cls, value: dict[str, Role]) -> dict[str, Role]:
        return {key.strip().lower(): role for key, role in value.items()}

    def role_for(self, email: str) -> Role | None:
        """The role the allow-list gives ``email``, or None when it is not on the list."""
        email = email.strip().lower()
        if email in self.roles:
            return self.roles[email]
        _, at, domain = email.rpartition("@")
        return self.roles.get("@" + domain) if at and domain else None


class UISettings(BaseModel):
    """The operators' and reviewers' web UI at ``/ui/``: local accounts (``seawall accounts``) and OIDC."""

    enabled: bool = Field(True, description="Serve the web UI at /ui/.")
    secret_file: Path = Field(
        Path("~/.local/share/seawall/ui-secret"),
        description="Key that signs the UI's session cookies; created (64 random bytes, mode 0600) if "
        "missing.",
    )
    session_max_age_s: int = Field(
        8 * 3600, ge=60, description="A sign-in lasts this long (seconds), then the person signs in again."
    )
    session_idle_s: int = Field(3600, ge=60, description="A session unused for this long (seconds) ends.")
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description=(
            "Mark cookies Secure: 'auto' when the request came over https (behind a proxy, run "
            "uvicorn with --proxy-headers), 'always', or 'never'."
        ),
    )
    public_url: str | None = Field(
        None,
        description=(
            "The URL people reach seawall at (e.g. https://seawall.example.org), for the OIDC redirect "
            "URI; None: taken from each request."
        ),
    )
    login_attempts: int = Field(
        10,
        ge=1,
        description="Password sign-in attempts allowed per account name and source address in "
        "login_window_s (so an attacker elsewhere cannot lock the owner out).",
    )
    login_window_s: int = Field(900, ge=1, description="The window of login_attempts, in seconds.")
    login_max_delay_s: float = Field(
        8.0,
        ge=0,
        le=60,
        description="Longest progressive delay before a sign-in attempt is checked: none for the first "
        "3 attempts of an account from an address in login_window_s, then 1, 2, 4 ... s up to this "
        "(0: no delays).",
    )
    min_password_length: int = Field(12, ge=8, description="Shortest password `seawall accounts` accepts.")
    page_size: int = Field(50, ge=5, le=500, description="Rows per page of the audit search.")
    oidc: OIDCSettings | None = Field(None, description="OIDC sign-in; None: local accounts only.")

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


__all__ = ["ROLES", "OIDCSettings", "Role", "UISettings"]
