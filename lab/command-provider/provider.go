package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Identification is the line every run shows once, so that no output can pass for the real provider's.
const Identification = "command provider: lab implementation, lab/command-provider (not pulumi-command's provider)"

// logger sends a message to the engine: ephemeral ones are status lines of a running resource.
type logger func(ctx context.Context, severity pulumirpc.LogSeverity, urn, message string, ephemeral bool)

type provider struct {
	pulumirpc.UnimplementedResourceProviderServer
	log logger

	// Cancel ends every running and later operation.
	mu     sync.Mutex
	root   context.Context
	cancel context.CancelFunc
}

func newProvider(log logger) *provider {
	root, cancel := context.WithCancel(context.Background())
	return &provider{log: log, root: root, cancel: cancel}
}

var marshalOptions = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true, SkipNulls: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, marshalOptions)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, marshalOptions)
}

// operation is the context of one Create/Update/Delete: the request's, ended also by Cancel.
func (p *provider) operation(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.root, cancel)
	return ctx, func() { stop(); cancel() }
}

func (p *provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *provider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *provider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *provider) Configure(ctx context.Context, _ *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	p.log(ctx, pulumirpc.LogSeverity_INFO, "", Identification, false)
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, AcceptResources: true, SupportsPreview: true}, nil
}

func (p *provider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.cancel()
	return &emptypb.Empty{}, nil
}

func resourceType(urn, typ string) string {
	if typ != "" {
		return typ
	}
	return string(resource.URN(urn).Type())
}

// decode checks inputs of a resource type; unknown values are accepted (they are resolved before a run).
func decode(typ string, inputs resource.PropertyMap) (*decoder, *command, *copyToRemote, error) {
	d := &decoder{}
	switch typ {
	case typeRemoteCommand, typeLocalCommand:
		return d, d.command(typ, inputs), nil, nil
	case typeCopyToRemote:
		return d, nil, d.copyToRemote(inputs), nil
	default:
		return nil, nil, nil, status.Errorf(codes.InvalidArgument,
			"the lab's command provider implements %s, %s and %s, not %s",
			typeRemoteCommand, typeLocalCommand, typeCopyToRemote, typ)
	}
}

func (p *provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	typ := resourceType(req.GetUrn(), req.GetType())
	news = withDefaults(news)
	d, _, _, err := decode(typ, news)
	if err != nil {
		return nil, err
	}
	if typ == typeCopyToRemote {
		// The hash of a file source is part of the inputs: a changed file is a changed input.
		if err := hashSource(news); err != nil {
			d.fail("source", "%v", err)
		}
	}
	inputs, err := marshal(news)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.CheckResponse{Inputs: inputs}
	for _, f := range d.failures {
		resp.Failures = append(resp.Failures, &pulumirpc.CheckFailure{Property: f.property, Reason: f.reason})
	}
	return resp, nil
}

func hashSource(inputs resource.PropertyMap) error {
	v, ok := inputs["source"]
	if !ok {
		return nil
	}
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	switch {
	case v.IsAsset():
		return v.AssetValue().EnsureHash()
	case v.IsArchive():
		return v.ArchiveValue().EnsureHash()
	}
	return nil
}

// oldInputs are the inputs a resource was last created or updated with.
func oldInputs(typ string, oldInputs, olds *structpb.Struct) (resource.PropertyMap, error) {
	if oldInputs != nil && len(oldInputs.GetFields()) > 0 {
		return unmarshal(oldInputs)
	}
	state, err := unmarshal(olds)
	if err != nil {
		return nil, err
	}
	for _, key := range outputKeys[typ] {
		delete(state, resource.PropertyKey(key))
	}
	return state, nil
}

// Diff compares every input: a change of `triggers` replaces the resource, any other change updates it
// (which runs `update`, or `create` again when there is no `update`).
func (p *provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	typ := resourceType(req.GetUrn(), req.GetType())
	olds, err := oldInputs(typ, req.GetOldInputs(), req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	ignored := map[string]bool{}
	for _, key := range req.GetIgnoreChanges() {
		ignored[key] = true
	}
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	resp := &pulumirpc.DiffResponse{DetailedDiff: map[string]*pulumirpc.PropertyDiff{}, HasDetailedDiff: true}
	for _, key := range sortedPropertyKeys(keys) {
		name := string(key)
		oldValue, hadOld := present(olds, key)
		newValue, hasNew := present(news, key)
		if ignored[name] || (hadOld == hasNew && (!hasNew || equalValues(oldValue, newValue))) {
			continue
		}
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hadOld:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasNew:
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if name == "triggers" {
			kind = replacing[kind]
			resp.Replaces = append(resp.Replaces, name)
		}
		resp.Diffs = append(resp.Diffs, name)
		resp.DetailedDiff[name] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	resp.Changes = pulumirpc.DiffResponse_DIFF_NONE
	if len(resp.Diffs) > 0 {
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return resp, nil
}

var replacing = map[pulumirpc.PropertyDiff_Kind]pulumirpc.PropertyDiff_Kind{
	pulumirpc.PropertyDiff_ADD:    pulumirpc.PropertyDiff_ADD_REPLACE,
	pulumirpc.PropertyDiff_DELETE: pulumirpc.PropertyDiff_DELETE_REPLACE,
	pulumirpc.PropertyDiff_UPDATE: pulumirpc.PropertyDiff_UPDATE_REPLACE,
}

func present(m resource.PropertyMap, key resource.PropertyKey) (resource.PropertyValue, bool) {
	v, ok := m[key]
	return v, ok && !v.IsNull()
}

func sortedPropertyKeys(keys map[resource.PropertyKey]bool) []resource.PropertyKey {
	out := make([]resource.PropertyKey, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// equalValues: equal once secrets are unwrapped; a value not known yet is a change.
func equalValues(a, b resource.PropertyValue) bool {
	if a.ContainsUnknowns() || b.ContainsUnknowns() {
		return false
	}
	return unsecret(a).DeepEquals(unsecret(b))
}

func unsecret(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return unsecret(v.SecretValue().Element)
	case v.IsArray():
		items := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, item := range v.ArrayValue() {
			items[i] = unsecret(item)
		}
		return resource.NewProperty(items)
	case v.IsObject():
		m := resource.PropertyMap{}
		for k, item := range v.ObjectValue() {
			m[k] = unsecret(item)
		}
		return resource.NewProperty(m)
	}
	return v
}

func uniqueID(prefix string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

func computedString() resource.PropertyValue {
	return resource.MakeComputed(resource.NewProperty(""))
}

// commandState is the state of a command resource: its inputs, and the outputs of its last run.
func commandState(inputs resource.PropertyMap, out resource.PropertyMap) resource.PropertyMap {
	state := inputs.Copy()
	for k, v := range out {
		state[k] = v
	}
	return state
}

func outputProperties(o outputs) resource.PropertyMap {
	return resource.PropertyMap{"stdout": resource.NewProperty(o.stdout), "stderr": resource.NewProperty(o.stderr)}
}

var computedOutputs = resource.PropertyMap{"stdout": computedString(), "stderr": computedString()}

// resolved refuses inputs that are still unknown when a command is about to run.
func resolved(d *decoder) error {
	if len(d.failures) > 0 {
		var problems []string
		for _, f := range d.failures {
			problems = append(problems, f.property+" "+f.reason)
		}
		return status.Error(codes.InvalidArgument, strings.Join(problems, "; "))
	}
	if len(d.unknown) > 0 {
		return status.Errorf(codes.FailedPrecondition, "inputs not known yet: %s", strings.Join(d.unknown, ", "))
	}
	return nil
}

func (p *provider) run(ctx context.Context, urn string, c *command, cmd *text, prev *previous) (outputs, error) {
	ctx, done := p.operation(ctx)
	defer done()
	sink := func(line string) { p.log(ctx, pulumirpc.LogSeverity_INFO, urn, line, true) }
	if c.typ == typeLocalCommand {
		return runLocal(ctx, c, cmd, prev, sink)
	}
	warn := func(message string) { p.log(ctx, pulumirpc.LogSeverity_WARNING, urn, message, false) }
	return runRemote(ctx, c, cmd, prev, warn, sink)
}

// decodeRequest reads and checks the inputs a Create or Update carries.
func decodeRequest(urn, typ string, inputs *structpb.Struct) (resource.PropertyMap, *decoder, *command, *copyToRemote, error) {
	news, err := unmarshal(inputs)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	d, c, copySpec, err := decode(resourceType(urn, typ), news)
	return news, d, c, copySpec, err
}

func (p *provider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	news, d, c, copySpec, err := decodeRequest(req.GetUrn(), req.GetType(), req.GetProperties())
	if err != nil {
		return nil, err
	}
	if copySpec != nil {
		// As pulumi-command: no ID while previewing a copy, a random one once it ran.
		if req.GetPreview() {
			return p.created("", news)
		}
		if err := p.copy(ctx, d, copySpec); err != nil {
			return nil, err
		}
		id, err := uniqueID("")
		if err != nil {
			return nil, err
		}
		return p.created(id, news)
	}
	// As pulumi-command: `<name><8 hex digits>`, random, even while previewing.
	id, err := uniqueID(string(resource.URN(req.GetUrn()).Name()))
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		return p.created(id, commandState(news, computedOutputs))
	}
	if err := resolved(d); err != nil {
		return nil, err
	}
	result := outputs{}
	if c.create != nil {
		if result, err = p.run(ctx, req.GetUrn(), c, c.create, nil); err != nil {
			return nil, err
		}
	}
	return p.created(id, commandState(news, outputProperties(result)))
}

// copy runs a CopyToRemote once every input is known.
func (p *provider) copy(ctx context.Context, d *decoder, spec *copyToRemote) error {
	if err := resolved(d); err != nil {
		return err
	}
	ctx, done := p.operation(ctx)
	defer done()
	return copyTo(ctx, spec)
}

func (p *provider) created(id string, state resource.PropertyMap) (*pulumirpc.CreateResponse, error) {
	props, err := marshal(state)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func previousOutputs(state resource.PropertyMap) (*previous, resource.PropertyMap) {
	prev := &previous{}
	kept := resource.PropertyMap{}
	for _, key := range []resource.PropertyKey{"stdout", "stderr"} {
		v, ok := state[key]
		if !ok {
			continue
		}
		kept[key] = v
		if plain := unsecret(v); plain.IsString() {
			if key == "stdout" {
				prev.stdout = plain.StringValue()
			} else {
				prev.stderr = plain.StringValue()
			}
		}
	}
	return prev, kept
}

func (p *provider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, d, c, copySpec, err := decodeRequest(req.GetUrn(), req.GetType(), req.GetNews())
	if err != nil {
		return nil, err
	}
	if copySpec != nil {
		if !req.GetPreview() && copyNeeded(olds, news) {
			if err := p.copy(ctx, d, copySpec); err != nil {
				return nil, err
			}
		}
		return p.updated(news)
	}
	prev, kept := previousOutputs(olds)
	if req.GetPreview() {
		// As pulumi-command: the last outputs stay until the command runs, unless an input is not known yet.
		if len(d.unknown) > 0 {
			kept = computedOutputs
		}
		return p.updated(commandState(news, kept))
	}
	if err := resolved(d); err != nil {
		return nil, err
	}
	cmd := c.update
	if cmd == nil {
		cmd = c.create
	}
	if cmd == nil {
		return p.updated(commandState(news, kept))
	}
	result, err := p.run(ctx, req.GetUrn(), c, cmd, prev)
	if err != nil {
		return nil, err
	}
	return p.updated(commandState(news, outputProperties(result)))
}

// copyNeeded: pulumi-command uploads again when the source's content or the destination changed.
func copyNeeded(olds, news resource.PropertyMap) bool {
	return !equalValues(olds["source"], news["source"]) || !equalValues(olds["remotePath"], news["remotePath"])
}

func (p *provider) updated(state resource.PropertyMap) (*pulumirpc.UpdateResponse, error) {
	props, err := marshal(state)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

// Delete runs `delete` with the state of the last run (stdin, environment, connection and, unless
// addPreviousOutputInEnv is false, the last stdout/stderr). A CopyToRemote leaves its files, as
// pulumi-command does.
func (p *provider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	typ := resourceType(req.GetUrn(), req.GetType())
	state, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if typ == typeCopyToRemote {
		return &emptypb.Empty{}, nil
	}
	inputs := state.Copy()
	for _, key := range outputKeys[typ] {
		delete(inputs, resource.PropertyKey(key))
	}
	d, c, _, err := decode(typ, inputs)
	if err != nil {
		return nil, err
	}
	if c.delete == nil {
		return &emptypb.Empty{}, nil
	}
	if err := resolved(d); err != nil {
		return nil, err
	}
	prev, _ := previousOutputs(state)
	if _, err := p.run(ctx, req.GetUrn(), c, c.delete, prev); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Read (refresh) keeps what the state says: nothing on the host is read back, as with pulumi-command.
func (p *provider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}
