package release

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
)

// TypeScriptPackage is the TypeScript SDK's package.json, relative to the repository root.
const TypeScriptPackage = "sdk/typescript/package.json"

// SDKVersions reports the version the SDKs take from the API (info.version) and the tag
// the Go SDK, a module of its own in sdk/go, is released under.
type SDKVersions struct {
	API      string
	GoSDKTag string
}

// CheckSDKVersions reads the spec's info.version and returns the SDK versions that follow
// it; it fails when the TypeScript SDK's package.json names another version, since a
// client generated from one API version must say so.
func CheckSDKVersions(dir string) (SDKVersions, error) {
	spec, err := fs.ReadFile(os.DirFS(dir), SpecPath)
	if err != nil {
		return SDKVersions{}, err
	}
	api, err := SpecVersion(spec)
	if err != nil {
		return SDKVersions{}, fmt.Errorf("%s: %w", SpecPath, err)
	}
	if _, err := Major(api); err != nil {
		return SDKVersions{}, fmt.Errorf("%s: info.version: %w", SpecPath, err)
	}
	raw, err := fs.ReadFile(os.DirFS(dir), TypeScriptPackage)
	if err != nil {
		return SDKVersions{}, err
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		return SDKVersions{}, fmt.Errorf("%s: %w", TypeScriptPackage, err)
	}
	if pkg.Version != api {
		return SDKVersions{}, fmt.Errorf("%s has version %q but the API (%s info.version) is %q: SDK versions follow the API, set it to %q", TypeScriptPackage, pkg.Version, SpecPath, api, api)
	}
	return SDKVersions{API: api, GoSDKTag: "sdk/go/v" + api}, nil
}
