# Checks every field of the Lambda proxy event (payload format 1.0) the
# gateway sends, then answers with what it saw: multi-value headers and
# query strings, path parameters, and the body (a binary body comes
# base64-encoded and goes back base64-encoded, reversed).
import base64
import json

FIELDS = ["resource", "path", "httpMethod", "headers", "multiValueHeaders",
          "queryStringParameters", "multiValueQueryStringParameters",
          "pathParameters", "stageVariables", "requestContext", "body",
          "isBase64Encoded"]
CONTEXT = ["requestId", "stage", "apiId", "resourcePath", "httpMethod",
           "path", "identity", "requestTimeEpoch"]


def handler(event, context):
    missing = [f for f in FIELDS if f not in event]
    missing += ["requestContext." + f for f in CONTEXT if f not in event["requestContext"]]
    if "sourceIp" not in event["requestContext"]["identity"]:
        missing.append("requestContext.identity.sourceIp")
    assert not missing, "missing event fields: %s" % missing
    assert isinstance(event["requestContext"]["requestTimeEpoch"], int)
    assert isinstance(event["isBase64Encoded"], bool)
    for k, vs in event["multiValueHeaders"].items():
        assert event["headers"][k] == vs[-1], k
    for k, vs in (event["multiValueQueryStringParameters"] or {}).items():
        assert event["queryStringParameters"][k] == vs[-1], k
    body = event["body"]
    if event["isBase64Encoded"]:
        raw = base64.b64decode(body)
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream", "X-Event-Base64": "true"},
            "body": base64.b64encode(raw[::-1]).decode(),
            "isBase64Encoded": True,
        }
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-Single": "one"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps({"event": event}),
        "isBase64Encoded": False,
    }
