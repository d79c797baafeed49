#!/usr/bin/env bash
# Debian packages the tests use: dciodvfy (dicom3tools) validates every DICOM
# object MedCF writes; dcmcjpeg (dcmtk) makes JPEG-lossless test inputs, which
# no Python package encodes; Orthanc (with its DICOMweb plugin) is the PACS the
# network tests store to and retrieve from. Installs only what is missing, and only as root.
set -euo pipefail
missing=()
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v dcmcjpeg >/dev/null 2>&1 || missing+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system-deps: installed ${missing[*]}"
