"""Verifies one captured rest-hook request with the Standard Webhooks reference library.

Used by tests/it/signatures.rs as an implementation independent of Herald's signer
(`pip install standardwebhooks`). Reads from stdin a JSON object
    {"headers": {"webhook-id": "...", ...}, "body_base64": "..."}
and takes the secret ("whsec_...") from the WEBHOOK_SECRET environment variable, so it is
not on the command line. Exit status: 0 verified, 1 refused (the reason on stdout),
2 bad input, 3 the standardwebhooks package is not installed.
"""

import base64
import json
import os
import sys

try:
    from standardwebhooks import Webhook, WebhookVerificationError
except ImportError:
    print("standardwebhooks is not installed (pip install standardwebhooks)")
    sys.exit(3)


def main() -> int:
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        print("WEBHOOK_SECRET is not set")
        return 2
    try:
        captured = json.load(sys.stdin)
        headers = {str(k): str(v) for k, v in captured["headers"].items()}
        body = base64.b64decode(captured["body_base64"])
    except (ValueError, KeyError, TypeError) as e:
        print(f"bad input: {e}")
        return 2
    try:
        # The default (json_parse=True) also checks that the verified body is JSON.
        Webhook(secret).verify(body, headers)
    except (WebhookVerificationError, ValueError) as e:
        print(f"refused: {e}")
        return 1
    print("verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
