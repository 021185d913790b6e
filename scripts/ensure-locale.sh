#!/usr/bin/env bash
# ensure-locale.sh: best effort to have the en_US.UTF-8 locale, so the test
# that runs redis-server under a locale whose collation is not byte order
# (sinks TestWriteVersionOrderingUnderLocale) runs rather than skips.
# Never fails: without the locale that one test says it skipped and why.
set -uo pipefail
have_locale() { locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; }
if have_locale; then
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-locale: installing the en_US.UTF-8 locale" >&2
	export DEBIAN_FRONTEND=noninteractive
	{ [ -d /usr/share/i18n/locales ] && [ -e /usr/share/i18n/locales/en_US ]; } ||
		apt-get install -y -qq locales >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq locales >/dev/null 2>&1; }
	localedef -i en_US -f UTF-8 en_US.UTF-8 >/dev/null 2>&1
fi
have_locale || echo "ensure-locale: en_US.UTF-8 not available; TestWriteVersionOrderingUnderLocale will skip" >&2
exit 0
