"""What verifying an end user's token costs the gateway, per request, once the keys are cached.

Builds a JWKS cache file (an RSA-2048 and a P-256 key, as a provider publishes them), a
:class:`~seawall.gateway.user_tokens.UserTokenVerifier` on it (no network: the keys come from
the file, as after a restart), and times ``verify`` on an RS256 and an ES256 ID token: the
header, the key by ``kid``, the signature and the claims. Prints microseconds per verification
and confirms that no fetch happened.

Usage: python bench/user_tokens.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from seawall.gateway.user_tokens import UserTokenVerifier
from seawall.settings import UserTokenSettings

ISSUER = "https://id.example"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="verifications timed per algorithm")
    args = parser.parse_args()
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "alg": "RS256", "use": "sig"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "alg": "ES256", "use": "sig"})
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "jwks.json"
        keys = [rsa.as_dict(private=False), ec.as_dict(private=False)]
        cache.write_text(
            json.dumps(
                {
                    "version": 1,
                    "issuer": ISSUER,
                    "jwks_url": f"{ISSUER}/jwks",
                    "fetched_at": time.time(),
                    "jwks": {"keys": keys},
                }
            )
        )
        settings = UserTokenSettings(issuer=ISSUER, audiences=["app"], cache_file=cache)
        verifier = UserTokenVerifier(settings)
        claims = {"iss": ISSUER, "aud": "app", "sub": "user-1", "exp": int(time.time()) + 3600}
        for key, alg in ((rsa, "RS256"), (ec, "ES256")):
            token = jwt.encode({"alg": alg, "kid": key.kid}, claims, key)

            async def timed(token: str = token) -> float:
                for _ in range(50):  # warm-up
                    await verifier.verify(token)
                began = time.perf_counter()
                for _ in range(args.rounds):
                    await verifier.verify(token)
                return (time.perf_counter() - began) / args.rounds * 1e6

            print(f"{alg}: {asyncio.run(timed()):.1f} µs per verification ({args.rounds} rounds)")
        print(f"JWKS fetches: {verifier.keys.fetches} (the keys came from the cache file)")


if __name__ == "__main__":
    main()
