"""A local SMTP server for the e-mail receiver test (Debian's python3-aiosmtpd): STARTTLS
required, AUTH PLAIN required (user and password from argv), each message received
printed as one JSON line on stdout. Nothing here is under test.

usage: smtp_receiver.py PORT CERT KEY USER PASSWORD
"""
import asyncio
import email
import json
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password = sys.argv[1:6]


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
controller = Controller(
    Handler(), hostname="127.0.0.1", port=int(port), tls_context=context,
    require_starttls=True, authenticator=authenticator, auth_required=True,
)
controller.start()
print("ready", flush=True)
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
