#!/usr/bin/env bash
# Package dist/kl3m-desk.app as dist/kl3m-desk-VERSION-macos-arm64.dmg, signed and notarized when
# credentials are set. Run it on macOS after `python packaging/build.py`:
#
#     bash packaging/macos/make_dmg.sh
#
# Environment:
#   KL3M_DESK_CODESIGN_IDENTITY  codesign identity in the keychain, such as
#                                "Developer ID Application: Name (TEAMID)". Unset or empty: the dmg
#                                and app stay unsigned (PyInstaller's ad-hoc signature only).
#   KL3M_DESK_NOTARY_PROFILE     notarytool keychain profile (made with
#                                `xcrun notarytool store-credentials`), or else all three of
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD  (an app-specific password).
#   PYTHON                       interpreter that imports kl3m_desk (default: python).
#
# With an identity, every Mach-O file in the app is signed inside out with the hardened runtime
# and a secure timestamp. With notarization credentials as well, the app is notarized and
# stapled before it goes into the dmg, and then the dmg is notarized and stapled. Stapling both
# lets Gatekeeper accept the app on a Mac that is offline, also after the app is copied out of
# the dmg. A build that is not both signed and notarized also gets dist/SIGNING.txt, which
# explains to users how to open it.
#
# NOTE: no run on a Mac has checked this script yet, so its codesign, hdiutil, notarytool and
# stapler calls are untested. release.yml runs it on macOS-14 runners.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIST="$ROOT/dist"
APP="$DIST/kl3m-desk.app"
MAIN_EXECUTABLE="$APP/Contents/MacOS/kl3m-desk"
ENTITLEMENTS="$ROOT/packaging/macos/entitlements.plist"
SIGNING_NOTE="$DIST/SIGNING.txt"
PYTHON=${PYTHON:-python}
IDENTITY=${KL3M_DESK_CODESIGN_IDENTITY:-}

fail() {
    echo "make_dmg.sh: error: $*" >&2
    exit 1
}

say() {
    echo "make_dmg.sh: $*"
}

# Set NOTARY_ARGS to the notarytool credential options, or to nothing when no credentials are set.
set_notary_credentials() {
    NOTARY_ARGS=()
    if [ -n "${KL3M_DESK_NOTARY_PROFILE:-}" ]; then
        NOTARY_ARGS=(--keychain-profile "$KL3M_DESK_NOTARY_PROFILE")
        return
    fi
    local missing=()
    [ -n "${APPLE_ID:-}" ] || missing+=(APPLE_ID)
    [ -n "${APPLE_TEAM_ID:-}" ] || missing+=(APPLE_TEAM_ID)
    [ -n "${APPLE_APP_PASSWORD:-}" ] || missing+=(APPLE_APP_PASSWORD)
    if [ "${#missing[@]}" -eq 3 ]; then
        return
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        fail "notarization credentials are incomplete: ${missing[*]} not set. Set all of" \
            "APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD, or KL3M_DESK_NOTARY_PROFILE."
    fi
    # NOTE: the password goes on the command line, so other local users can see it in the process
    # list while notarytool runs. A keychain profile (KL3M_DESK_NOTARY_PROFILE) avoids that.
    NOTARY_ARGS=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
}

# Print the value of KEY from the JSON object on standard input.
json_field() {
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}

# Submit FILE (a .zip or .dmg) to Apple's notary service and wait for the verdict.
# `notarytool submit --wait` exits with status 0 even when the verdict is Invalid, so the status
# field of its JSON output decides.
notarize() {
    local file=$1 output status submission_id
    say "submitting $(basename "$file") for notarization (this can take several minutes)"
    if ! output=$(xcrun notarytool submit "$file" "${NOTARY_ARGS[@]}" --wait --output-format json); then
        fail "notarytool submit failed for $file: $output"
    fi
    status=$(json_field status <<<"$output")
    submission_id=$(json_field id <<<"$output")
    if [ "$status" != "Accepted" ]; then
        echo "make_dmg.sh: notarization of $(basename "$file") ended with status" \
            "'$status' (submission $submission_id). Apple's log:" >&2
        xcrun notarytool log "$submission_id" "${NOTARY_ARGS[@]}" >&2 || true
        fail "notarization of $file was not accepted."
    fi
    say "notarization accepted (submission $submission_id)"
}

# Sign one file or bundle with the hardened runtime and a secure timestamp. Entitlements go to
# executables only, because libraries inherit those of the process that loads them.
sign() {
    local path=$1 with_entitlements=$2
    local options=(--force --options runtime --timestamp --sign "$IDENTITY")
    if [ "$with_entitlements" = yes ]; then
        options+=(--entitlements "$ENTITLEMENTS")
    fi
    codesign "${options[@]}" "$path"
}

# Sign the disk image itself. The hardened runtime applies to code, not to a disk image.
sign_dmg() {
    codesign --force --timestamp --sign "$IDENTITY" "$DMG"
    codesign --verify --verbose=2 "$DMG"
}

# Sign every Mach-O file and nested .framework in the app, deepest paths first, then the main
# executable and the app itself. Signing with codesign --deep would apply one set of options to
# everything and skip code outside the folders where a bundle keeps code.
sign_app() {
    local path description count=0
    say "signing $APP as '$IDENTITY'"
    # codesign rejects files that carry Finder information or a resource fork ("resource fork,
    # Finder information, or similar detritus not allowed"), so extended attributes go first.
    xattr -cr "$APP"

    while IFS= read -r path; do
        [ "$path" = "$MAIN_EXECUTABLE" ] && continue
        description=$(file -b "$path")
        case "$description" in
            Mach-O*executable*) sign "$path" yes ;;
            Mach-O*) sign "$path" no ;;
            *) continue ;;
        esac
        count=$((count + 1))
    done < <(find "$APP/Contents" -type f | awk -F/ '{ print NF "\t" $0 }' | sort -rn | cut -f2-)
    say "signed $count Mach-O files inside the app"

    while IFS= read -r path; do
        sign "$path" no
    done < <(find "$APP/Contents" -type d -name '*.framework' \
        | awk -F/ '{ print NF "\t" $0 }' | sort -rn | cut -f2-)

    sign "$MAIN_EXECUTABLE" yes
    sign "$APP" yes
    codesign --verify --deep --strict --verbose=2 "$APP"
}

# Write dist/SIGNING.txt and print it, for a build that Gatekeeper will not open as it is.
write_signing_note() {
    local state=$1
    cat >"$SIGNING_NOTE" <<EOF
kl3m-desk $VERSION for macOS (Apple silicon): this build is $state.

macOS refuses to open it on first launch. macOS 15 (Sequoia) and later no longer offer the
Control-click > Open bypass. To run it anyway:
  1. Copy kl3m-desk.app from the disk image to Applications and open it once. Close the warning.
  2. Open System Settings > Privacy & Security, scroll to Security, click "Open Anyway" next to
     kl3m-desk, and confirm with your password.

To publish a release that opens without these steps, sign and notarize it: set
KL3M_DESK_CODESIGN_IDENTITY and notarization credentials (KL3M_DESK_NOTARY_PROFILE, or
APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD) and run packaging/macos/make_dmg.sh again.
EOF
    echo "=================================================================================="
    cat "$SIGNING_NOTE"
    echo "=================================================================================="
}

[ "$(uname -s)" = Darwin ] || fail "this script needs macOS (codesign, hdiutil); this is $(uname -s)."
[ -d "$APP" ] || fail "$APP not found. Build it first with: python packaging/build.py"
[ -x "$MAIN_EXECUTABLE" ] || fail "$MAIN_EXECUTABLE not found or not executable."
case " $(lipo -archs "$MAIN_EXECUTABLE") " in
    *" arm64 "*) ;;
    *) fail "$MAIN_EXECUTABLE has no arm64 code ($(lipo -archs "$MAIN_EXECUTABLE")); build on" \
        "an Apple silicon Mac." ;;
esac

if ! VERSION=$(cd "$ROOT" && "$PYTHON" -c 'import kl3m_desk; print(kl3m_desk.__version__)'); then
    fail "could not import kl3m_desk with '$PYTHON'. Install the project (pip install -e .) or set PYTHON."
fi
DMG="$DIST/kl3m-desk-$VERSION-macos-arm64.dmg"
# A dmg or note left by an earlier run must not pass for the output of this one if it fails.
rm -f "$DMG" "$SIGNING_NOTE"

NOTARY_ARGS=()
if [ -n "$IDENTITY" ]; then
    set_notary_credentials
elif [ -n "${KL3M_DESK_NOTARY_PROFILE:-}${APPLE_ID:-}" ]; then
    say "notarization credentials are set but KL3M_DESK_CODESIGN_IDENTITY is not; Apple notarizes" \
        "signed code only, so notarization is skipped."
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kl3m-desk-dmg.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ -n "$IDENTITY" ]; then
    sign_app
    if [ "${#NOTARY_ARGS[@]}" -gt 0 ]; then
        ditto -c -k --keepParent "$APP" "$WORK/kl3m-desk.zip"
        notarize "$WORK/kl3m-desk.zip"
        xcrun stapler staple "$APP"
        xcrun stapler validate "$APP"
    fi
fi

# The dmg contains the app and a link to /Applications, so users install by dragging.
STAGING="$WORK/staging"
mkdir "$STAGING"
ditto "$APP" "$STAGING/kl3m-desk.app"
ln -s /Applications "$STAGING/Applications"
# hdiutil can size the image from the folder, but that estimate fails with "No space left on
# device" for some large folders. The size is therefore given: the contents plus 10% and 64 MB.
CONTENT_MB=$(du -sm "$STAGING" | cut -f1)
IMAGE_MB=$((CONTENT_MB + CONTENT_MB / 10 + 64))
say "creating $DMG from ${CONTENT_MB} MB of files (${IMAGE_MB} MB image before compression)"
hdiutil create -volname "kl3m-desk $VERSION" -srcfolder "$STAGING" -fs HFS+ -format UDZO \
    -size "${IMAGE_MB}m" "$DMG"

if [ -z "$IDENTITY" ]; then
    write_signing_note "UNSIGNED and NOT NOTARIZED"
elif [ "${#NOTARY_ARGS[@]}" -eq 0 ]; then
    sign_dmg
    write_signing_note "signed but NOT NOTARIZED"
else
    sign_dmg
    notarize "$DMG"
    xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
    say "signed and notarized"
fi

say "wrote $DMG ($(du -h "$DMG" | cut -f1))"
