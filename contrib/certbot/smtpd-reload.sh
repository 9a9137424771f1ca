#!/bin/sh
# certbot deploy hook: smtpd reloads its certificate on SIGHUP, without dropping a session.
# Install: cp contrib/certbot/smtpd-reload.sh /etc/letsencrypt/renewal-hooks/deploy/ && chmod 755 ...
# and point [tls] cert/key at /etc/letsencrypt/live/<name>/fullchain.pem and privkey.pem (readable
# by the smtpd group: chgrp smtpd + chmod g+r on the archive files and the live/archive dirs).
set -eu
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet smtpd; then
    systemctl reload smtpd
else
    pkill -HUP -x smtpd
fi
