# The builder of closure.nix (run by bash inside the Nix build, with $out, $payload, $name,
# $behaviour, $switchScript and $activateScript from the derivation).
set -eu
PATH=/usr/bin:/bin
mkdir -p "$out/bin" "$out/etc"
render() {
    printf '%s' "$1" | sed -e "s|@out@|$out|g" -e "s|@behaviour@|$behaviour|g" >"$2"
    chmod 0555 "$2"
}
render "$switchScript" "$out/bin/switch-to-configuration"
render "$activateScript" "$out/bin/activate"
echo "$name" >"$out/nixos-version"

# The generation's own service, started by switch and test. A healthy one serves
# $payload/www/health on 127.0.0.1:8080; a broken one starts, then dies a second later; one
# whose unit fails cannot be started at all, so the switch reports it (exit 4).
service_type=simple
case "$behaviour" in
broken) exec_start="/bin/sh -c 'sleep 1; echo this generation is broken; exit 1'" ;;
unit-fails)
    service_type=oneshot
    exec_start="/bin/sh -c 'echo this generation cannot start its service; exit 1'"
    ;;
*) exec_start="/bin/busybox httpd -f -p 127.0.0.1:8080 -h $payload/www" ;;
esac
cat >"$out/etc/fleetnode-generation.service" <<UNIT
[Unit]
Description=the service of system generation $name

[Service]
Type=$service_type
ExecStart=$exec_start
UNIT
