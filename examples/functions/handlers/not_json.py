# Bytes are sent as they are by the host: not JSON (502 FunctionBadReply).
def handler(event, context):
    return b"<html>not json</html>"
