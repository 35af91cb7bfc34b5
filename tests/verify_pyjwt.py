#!/usr/bin/python3
"""PyJWT, as a second JOSE implementation for tests/algorithms.rs.

Run by Debian's /usr/bin/python3 with python3-jwt and python3-cryptography.
First prints one line {"pyjwt", "cryptography", "algorithms"} (or {"error"}
and exits 1 when an import fails), then answers one JSON line per request
line on stdin, in order:

  {"jwks": {...}, "token": "...", "alg": "ES256"}
      verify: picks the JWK by the token's kid; the header's and the JWK's
      alg must be `alg`. Answers {"ok": true, "claims": {...}, "how": ...}
      or {"ok": false, "error": "..."}. No claim is validated (the test
      keeps the timeline itself).
  {"op": "sign", "alg": "...", "jwk": {private JWK}, "kid": "...", "claims": {...}}
      sign: answers {"ok": true, "token": "..."} or {"ok": false, "error"}.

PyJWT 2.6 knows "EdDSA" but not RFC 9864's "Ed25519" (neither as a token's
alg nor as a JWK's). That is the lag RFC 9864 notes for libraries that
predate it: for such a token the header's alg is checked here and the
signature verified (or made) with PyJWT's EdDSA algorithm object,
OKPAlgorithm, directly: the same Ed25519 signature under another name.
"""

import json
import sys

try:
    import cryptography
    import jwt
    from jwt.algorithms import OKPAlgorithm, get_default_algorithms
    from jwt.utils import base64url_decode, base64url_encode
except Exception as e:  # noqa: BLE001 - any import failure is reported
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    sys.exit(1)

KNOWN = get_default_algorithms()
# Claims are the test's business; PyJWT checks the signature only.
NO_CLAIM_CHECKS = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}


def b64json(part):
    return json.loads(base64url_decode(part.encode()))


def verify(req):
    jwks, token, alg = req["jwks"], req["token"], req["alg"]
    header = jwt.get_unverified_header(token)
    if header.get("alg") != alg:
        raise ValueError(f"header alg {header.get('alg')!r}, expected {alg!r}")
    kid = header.get("kid")
    found = [k for k in jwks["keys"] if k.get("kid") == kid]
    if len(found) != 1:
        raise ValueError(f"{len(found)} JWKs with kid {kid!r}")
    jwk = found[0]
    if jwk.get("alg") != alg:
        raise ValueError(f"the JWK's alg is {jwk.get('alg')!r}, expected {alg!r}")
    if alg in KNOWN:
        # PyJWK takes the algorithm from the JWK's own alg.
        key = jwt.PyJWK(jwk).key
        claims = jwt.decode(token, key, algorithms=[alg], options=NO_CLAIM_CHECKS)
        return claims, "jwt.decode"
    if alg == "Ed25519":
        # RFC 9864's name, unknown to this PyJWT: EdDSA's object directly.
        okp = OKPAlgorithm()
        key = okp.from_jwk(jwk)
        signing_input, _, sig = token.rpartition(".")
        if not okp.verify(signing_input.encode(), key, base64url_decode(sig.encode())):
            raise ValueError("the Ed25519 signature does not verify")
        return b64json(signing_input.split(".")[1]), "OKPAlgorithm (EdDSA) for Ed25519"
    raise ValueError(f"PyJWT {jwt.__version__} cannot verify {alg}")


def sign(req):
    alg, jwk, kid, claims = req["alg"], req["jwk"], req["kid"], req["claims"]
    if alg in KNOWN:
        key = jwt.PyJWK(jwk).key
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
    if alg == "Ed25519":
        okp = OKPAlgorithm()
        key = okp.from_jwk(jwk)
        header = {"typ": "JWT", "alg": alg, "kid": kid}
        enc = lambda v: base64url_encode(  # noqa: E731
            json.dumps(v, separators=(",", ":")).encode()
        ).decode()
        signing_input = f"{enc(header)}.{enc(claims)}"
        sig = okp.sign(signing_input.encode(), key)
        return f"{signing_input}.{base64url_encode(sig).decode()}"
    raise ValueError(f"PyJWT {jwt.__version__} cannot sign {alg}")


def main():
    print(
        json.dumps(
            {
                "pyjwt": jwt.__version__,
                "cryptography": cryptography.__version__,
                "algorithms": sorted(KNOWN),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req.get("op") == "sign":
                out = {"ok": True, "token": sign(req)}
            else:
                claims, how = verify(req)
                out = {"ok": True, "claims": claims, "how": how}
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


main()
