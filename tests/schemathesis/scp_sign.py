"""Schemathesis hook: sign every request with the SCP signature
(base64 HMAC-SHA256 of METHOD + URL + timestamp + access key + account id
+ client type), the URL being the one actually sent (query included)."""
import base64, hashlib, hmac, os, time, itertools

import requests
import schemathesis

ACCESS = os.environ.get("SCP_ACCESS_KEY", "st-access-key")
SECRET = os.environ.get("SCP_SECRET_KEY", "st-secret-key")
ACCOUNT = os.environ.get("SCP_ACCOUNT_ID", "staccount")
CLIENT = "Openapi"
_seq = itertools.count()


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # A distinct timestamp each request: a signature is used once.
    ts = str(int(time.time() * 1000) * 1000 // 1000 + next(_seq) % 1000)
    tk = case.as_transport_kwargs(base_url=os.environ["ST_BASE_URL"])
    url = requests.Request(case.method, tk["url"], params=tk.get("params")).prepare().url
    msg = f"{case.method.upper()}{url}{ts}{ACCESS}{ACCOUNT}{CLIENT}".encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    if case.headers is None:
        case.headers = {}
    case.headers.update(
        {
            "Scp-AccessKey": ACCESS,
            "Scp-Timestamp": ts,
            "Scp-ClientType": CLIENT,
            "Scp-AccountId": ACCOUNT,
            "Scp-Signature": sig,
        }
    )
