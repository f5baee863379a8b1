# A reply without statusCode: the gateway answers 502 FunctionBadReply.
def handler(event, context):
    return {"body": "forgot the status"}
