# Sleeps past a short function timeout (504 FunctionTimeout).
import time


def handler(event, context):
    time.sleep(3)
    return {"statusCode": 200, "body": "too late"}
