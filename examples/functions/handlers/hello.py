# An AWS Lambda handler, unchanged: greets the caller by path parameter
# or query string.
import json


def handler(event, context):
    name = (event.get("pathParameters") or {}).get("name") \
        or (event.get("queryStringParameters") or {}).get("name") \
        or "world"
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": "hello, " + name, "requestId": event["requestContext"]["requestId"]}),
    }
