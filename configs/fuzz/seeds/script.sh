#!/bin/sh
echo not a cloud-config
