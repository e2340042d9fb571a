package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
)

// The resource types of pulumi-command 1.2.1's schema this provider implements.
const (
	typeRemoteCommand = "command:remote:Command"
	typeLocalCommand  = "command:local:Command"
	typeCopyToRemote  = "command:remote:CopyToRemote"
)

// Defaults pulumi-command 1.2.1 documents for a connection (and its proxy).
const (
	defaultUser           = "root"
	defaultPort           = 22
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
)

// Logging modes (the enums command:remote:Logging and command:local:Logging).
const (
	logStdout          = "stdout"
	logStderr          = "stderr"
	logStdoutAndStderr = "stdoutAndStderr"
	logNone            = "none"
)

// The input properties of each type, as the SDK's classes name them. Anything else is refused.
var (
	connectionKeys = []string{
		"host", "port", "user", "password", "privateKey", "privateKeyPassword", "agentSocketPath", "hostKey",
		"dialErrorLimit", "perDialTimeout", "proxy",
	}
	commandKeys = []string{
		"create", "update", "delete", "stdin", "environment", "logging", "triggers", "addPreviousOutputInEnv",
	}
	inputKeys = map[string][]string{
		typeRemoteCommand: append([]string{"connection"}, commandKeys...),
		typeLocalCommand:  append([]string{"dir", "interpreter", "assetPaths", "archivePaths"}, commandKeys...),
		typeCopyToRemote:  {"connection", "source", "remotePath", "triggers"},
	}
	// Output-only properties: not compared when inputs are diffed.
	outputKeys = map[string][]string{
		typeRemoteCommand: {"stdout", "stderr"},
		typeLocalCommand:  {"stdout", "stderr", "assets", "archive"},
		typeCopyToRemote:  {},
	}
)

// text is a string input that remembers whether it was a secret (secrets are never quoted in errors).
type text struct {
	value  string
	secret bool
}

type connection struct {
	host               string
	port               int
	user               string
	password           *text
	privateKey         *text
	privateKeyPassword *text
	agentSocketPath    string
	hostKey            string
	dialErrorLimit     int
	perDialTimeout     int
	proxy              *connection
}

func (c *connection) address() string { return fmt.Sprintf("%s:%d", c.host, c.port) }

type command struct {
	typ                    string
	create, update, delete *text
	stdin                  *text
	environment            map[string]string
	logging                string
	addPreviousOutputInEnv bool
	connection             *connection // remote only
	dir                    string      // local only
	interpreter            []string    // local only
}

type copySource struct {
	path    string // a FileAsset or a FileArchive
	text    string // a StringAsset
	isText  bool
	archive bool
}

type copyToRemote struct {
	connection *connection
	source     copySource
	remotePath string
}

// failure is a Check failure: which property, and what is wrong with it (never its value).
type failure struct {
	property string
	reason   string
}

// decoder reads typed inputs out of a property map, collecting what is wrong instead of stopping at the
// first problem. Unknown values (during preview) are tolerated and remembered.
type decoder struct {
	failures []failure
	unknown  []string
}

func (d *decoder) fail(property, format string, args ...any) {
	d.failures = append(d.failures, failure{property, fmt.Sprintf(format, args...)})
}

// get returns the value at key with any secret unwrapped, whether it was secret, and whether it is set.
func (d *decoder) get(m resource.PropertyMap, path, key string) (resource.PropertyValue, bool, bool) {
	v, ok := m[resource.PropertyKey(key)]
	if !ok || v.IsNull() {
		return resource.PropertyValue{}, false, false
	}
	secret := false
	for v.IsSecret() {
		secret = true
		v = v.SecretValue().Element
	}
	if v.IsOutput() {
		out := v.OutputValue()
		secret = secret || out.Secret
		if !out.Known {
			d.unknown = append(d.unknown, join(path, key))
			return v, secret, false
		}
		v = out.Element
	}
	if v.IsComputed() {
		d.unknown = append(d.unknown, join(path, key))
		return v, secret, false
	}
	return v, secret, true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) text(m resource.PropertyMap, path, key string) *text {
	v, secret, ok := d.get(m, path, key)
	if !ok {
		return nil
	}
	if !v.IsString() {
		d.fail(join(path, key), "must be a string, not %s", v.TypeString())
		return nil
	}
	return &text{value: v.StringValue(), secret: secret}
}

func (d *decoder) str(m resource.PropertyMap, path, key string) string {
	if t := d.text(m, path, key); t != nil {
		return t.value
	}
	return ""
}

func (d *decoder) integer(m resource.PropertyMap, path, key string, fallback int) int {
	v, _, ok := d.get(m, path, key)
	if !ok {
		return fallback
	}
	if !v.IsNumber() || v.NumberValue() != float64(int(v.NumberValue())) {
		d.fail(join(path, key), "must be a whole number, not %s", v.TypeString())
		return fallback
	}
	return int(v.NumberValue())
}

func (d *decoder) boolean(m resource.PropertyMap, path, key string, fallback bool) bool {
	v, _, ok := d.get(m, path, key)
	if !ok {
		return fallback
	}
	if !v.IsBool() {
		d.fail(join(path, key), "must be true or false, not %s", v.TypeString())
		return fallback
	}
	return v.BoolValue()
}

func (d *decoder) object(m resource.PropertyMap, path, key string) (resource.PropertyMap, bool) {
	v, _, ok := d.get(m, path, key)
	if !ok {
		return nil, false
	}
	if !v.IsObject() {
		d.fail(join(path, key), "must be an object, not %s", v.TypeString())
		return nil, false
	}
	return v.ObjectValue(), true
}

func (d *decoder) stringList(m resource.PropertyMap, path, key string) []string {
	v, _, ok := d.get(m, path, key)
	if !ok {
		return nil
	}
	if !v.IsArray() {
		d.fail(join(path, key), "must be a list of strings, not %s", v.TypeString())
		return nil
	}
	var out []string
	for i, item := range v.ArrayValue() {
		element := resource.PropertyMap{"item": item}
		if s := d.text(element, fmt.Sprintf("%s[%d]", join(path, key), i), "item"); s != nil {
			out = append(out, s.value)
		}
	}
	return out
}

func (d *decoder) stringMap(m resource.PropertyMap, path, key string) map[string]string {
	obj, ok := d.object(m, path, key)
	if !ok {
		return nil
	}
	out := map[string]string{}
	for _, k := range obj.StableKeys() {
		if s := d.text(obj, join(path, key), string(k)); s != nil {
			out[string(k)] = s.value
		}
	}
	return out
}

// onlyKeys refuses properties the schema does not have (a typo would otherwise be ignored silently).
func (d *decoder) onlyKeys(m resource.PropertyMap, path string, allowed []string) {
	known := map[string]bool{}
	for _, k := range allowed {
		known[k] = true
	}
	for _, k := range m.StableKeys() {
		if !known[string(k)] {
			d.fail(join(path, string(k)), "is not a property of this resource (allowed: %s)", strings.Join(sorted(allowed), ", "))
		}
	}
}

func sorted(items []string) []string {
	out := append([]string(nil), items...)
	sort.Strings(out)
	return out
}

func (d *decoder) connection(m resource.PropertyMap, path string, proxyAllowed bool) *connection {
	allowed := connectionKeys
	if !proxyAllowed {
		allowed = connectionKeys[:len(connectionKeys)-1]
	}
	d.onlyKeys(m, path, allowed)
	c := &connection{
		host:               d.str(m, path, "host"),
		port:               d.integer(m, path, "port", defaultPort),
		user:               d.str(m, path, "user"),
		password:           d.text(m, path, "password"),
		privateKey:         d.text(m, path, "privateKey"),
		privateKeyPassword: d.text(m, path, "privateKeyPassword"),
		agentSocketPath:    d.str(m, path, "agentSocketPath"),
		hostKey:            d.str(m, path, "hostKey"),
		dialErrorLimit:     d.integer(m, path, "dialErrorLimit", defaultDialErrorLimit),
		perDialTimeout:     d.integer(m, path, "perDialTimeout", defaultPerDialTimeout),
	}
	if _, _, set := d.get(m, path, "host"); !set && !d.isUnknown(join(path, "host")) {
		d.fail(join(path, "host"), "is required")
	}
	if c.user == "" {
		c.user = defaultUser
	}
	if c.port < 1 || c.port > 65535 {
		d.fail(join(path, "port"), "must be between 1 and 65535")
	}
	if c.dialErrorLimit < -1 || c.dialErrorLimit == 0 {
		d.fail(join(path, "dialErrorLimit"), "must be -1 (unlimited) or at least 1")
	}
	if c.perDialTimeout < 0 {
		d.fail(join(path, "perDialTimeout"), "must be 0 (no limit) or a number of seconds")
	}
	if c.hostKey != "" {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey)); err != nil {
			d.fail(join(path, "hostKey"), "is not an SSH public key in authorized_keys form (e.g. `ssh-ed25519 AAAA...`)")
		}
	}
	if proxyAllowed {
		if proxy, ok := d.object(m, path, "proxy"); ok {
			c.proxy = d.connection(proxy, join(path, "proxy"), false)
		}
	}
	return c
}

func (d *decoder) isUnknown(property string) bool {
	for _, u := range d.unknown {
		if u == property {
			return true
		}
	}
	return false
}

func (d *decoder) command(typ string, m resource.PropertyMap) *command {
	d.onlyKeys(m, "", inputKeys[typ])
	c := &command{
		typ:                    typ,
		create:                 d.text(m, "", "create"),
		update:                 d.text(m, "", "update"),
		delete:                 d.text(m, "", "delete"),
		stdin:                  d.text(m, "", "stdin"),
		environment:            d.stringMap(m, "", "environment"),
		logging:                d.str(m, "", "logging"),
		addPreviousOutputInEnv: d.boolean(m, "", "addPreviousOutputInEnv", true),
	}
	switch c.logging {
	case "":
		c.logging = logStdoutAndStderr
	case logStdout, logStderr, logStdoutAndStderr, logNone:
	default:
		d.fail("logging", "must be one of stdout, stderr, stdoutAndStderr, none")
	}
	if typ == typeRemoteCommand {
		conn, ok := d.object(m, "", "connection")
		switch {
		case ok:
			c.connection = d.connection(conn, "connection", true)
		case !d.isUnknown("connection"):
			d.fail("connection", "is required")
		}
		return c
	}
	c.dir = d.str(m, "", "dir")
	c.interpreter = d.stringList(m, "", "interpreter")
	for _, key := range []string{"assetPaths", "archivePaths"} {
		if _, _, set := d.get(m, "", key); set {
			d.fail(key, "is not implemented by the lab's command provider (lab/command-provider)")
		}
	}
	return c
}

func (d *decoder) copyToRemote(m resource.PropertyMap) *copyToRemote {
	d.onlyKeys(m, "", inputKeys[typeCopyToRemote])
	c := &copyToRemote{remotePath: d.str(m, "", "remotePath")}
	if conn, ok := d.object(m, "", "connection"); ok {
		c.connection = d.connection(conn, "connection", true)
	} else if !d.isUnknown("connection") {
		d.fail("connection", "is required")
	}
	if _, _, set := d.get(m, "", "remotePath"); !set && !d.isUnknown("remotePath") {
		d.fail("remotePath", "is required")
	}
	source, _, set := d.get(m, "", "source")
	switch {
	case !set:
		if !d.isUnknown("source") {
			d.fail("source", "is required: a FileAsset, StringAsset or FileArchive")
		}
	case source.IsAsset() && source.AssetValue().IsPath():
		c.source = copySource{path: source.AssetValue().Path}
	case source.IsAsset() && source.AssetValue().IsText():
		c.source = copySource{text: source.AssetValue().Text, isText: true}
	case source.IsArchive() && source.ArchiveValue().IsPath():
		c.source = copySource{path: source.ArchiveValue().Path, archive: true}
	default:
		d.fail("source", "must be a FileAsset, StringAsset or FileArchive (a path), not %s", source.TypeString())
	}
	return c
}

// withDefaults returns the inputs with pulumi-command's documented defaults filled in (they are part of
// the inputs the engine stores, as with the real provider): a connection's user, port, dialErrorLimit
// and perDialTimeout, and the same for its proxy. Secrets stay secrets.
func withDefaults(inputs resource.PropertyMap) resource.PropertyMap {
	out := inputs.Copy()
	if conn, ok := out["connection"]; ok {
		out["connection"] = mapObject(conn, func(m resource.PropertyMap) resource.PropertyMap {
			m = connectionDefaults(m)
			if proxy, ok := m["proxy"]; ok {
				m["proxy"] = mapObject(proxy, connectionDefaults)
			}
			return m
		})
	}
	return out
}

func connectionDefaults(m resource.PropertyMap) resource.PropertyMap {
	m = m.Copy()
	defaults := map[resource.PropertyKey]resource.PropertyValue{
		"user":           resource.NewProperty(defaultUser),
		"port":           resource.NewProperty(float64(defaultPort)),
		"dialErrorLimit": resource.NewProperty(float64(defaultDialErrorLimit)),
		"perDialTimeout": resource.NewProperty(float64(defaultPerDialTimeout)),
	}
	for key, value := range defaults {
		if v, ok := m[key]; !ok || v.IsNull() {
			m[key] = value
		}
	}
	return m
}

// mapObject applies f to the object inside v, keeping a secret wrapper around it.
func mapObject(v resource.PropertyValue, f func(resource.PropertyMap) resource.PropertyMap) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return resource.MakeSecret(mapObject(v.SecretValue().Element, f))
	case v.IsObject():
		return resource.NewProperty(f(v.ObjectValue()))
	default:
		return v
	}
}
