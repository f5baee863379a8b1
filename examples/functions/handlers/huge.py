# An 8 MiB reply, over Lambda's 6 MiB limit (502 FunctionBadReply).
def handler(event, context):
    return {"statusCode": 200, "body": "x" * (8 * 1024 * 1024)}
