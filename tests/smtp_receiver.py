"""A local SMTP server for the e-mail receiver test (Debian's python3-aiosmtpd): STARTTLS
required, AUTH PLAIN required (user and password from argv), each message received
printed as one JSON line on stdout. Nothing here is under test.

It picks its own free port and says it as "ready PORT" on stdout (a port chosen by the
test and bound here later can be taken in between by any outgoing connection).

usage: smtp_receiver.py CERT KEY USER PASSWORD
"""
import asyncio
import email
import json
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, user, password = sys.argv[1:5]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(email.header.make_header(email.header.decode_header(message["Subject"]))),
            "body": message.get_payload(decode=True).decode("utf-8"),
            "tls": session.ssl is not None,
        }), flush=True)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
        and auth_data.password.decode() == password
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


for attempt in range(10):
    port = free_port()
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=context,
        require_starttls=True, authenticator=authenticator, auth_required=True,
        ready_timeout=30,
    )
    try:
        controller.start()
        break
    except Exception as e:  # taken in between, or slow: say why, try another port
        print(f"port {port}: {e!r}", file=sys.stderr, flush=True)
        try:
            controller.stop()
        except Exception:
            pass
else:
    sys.exit("no port to listen on after 10 attempts")
print(f"ready {port}", flush=True)
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
