# Raises: the host answers 500 (502 FunctionError at the gateway).
def handler(event, context):
    raise RuntimeError("boom")
