//! ARM names, resource ids, resource types and locations, each parsed once into
//! a newtype (DESIGN.md §2). Past `parse` no invalid value exists; errors name
//! the field (`target`) and the rule broken.
//!
//! # Rules
//! - [`ResourceName`]: 1-80 characters, ASCII letters, digits, `_`, `-` and
//!   `.`, not ending with `.` (DESIGN.md §2, "Names follow ARM rules"); the
//!   first character is a letter or digit (Azure's naming rules for
//!   `Microsoft.Network` resources, "Start with alphanumeric"; the contract is
//!   silent on it). Azure also forbids a trailing `-` for some types; DESIGN.md
//!   does not, so neither do we.
//! - [`ResourceGroupName`]: Azure's rule for resource groups (the contract is
//!   silent): 1-90 characters, letters and digits (Unicode ones too), `_`, `-`,
//!   `.`, `(` and `)`, not ending with `.`.
//! - [`SubscriptionId`]: a GUID, as ARM requires (DESIGN.md §2 sets the default
//!   `00000000-0000-0000-0000-000000000000`); any case.
//! - A [`ResourceId`] is `/subscriptions/{sub}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}`,
//!   then any number of `/{type}/{name}` pairs.
//!   `subscriptions`, `resourceGroups` and `providers` match in any case (az
//!   sends `resourcegroups`, clients.md §5.2) and empty segments (`//`) are
//!   skipped; namespace and types of the kinds in [`ResourceKind`] are rewritten
//!   in their canonical spelling, names keep the caller's.
//! - [`Location`]: canonical form, lower case without spaces (`West US 2` is
//!   `westus2`), as az compares locations (clients.md §5.7).
//!
//! # Case
//! ARM compares names case-insensitively ("Always perform a case-insensitive
//! comparison of names"), so `==` and `Hash` of every type here ignore case
//! while `Display` keeps what the caller wrote; [`ResourceId::key`] is the one
//! lower-case spelling to store and index by.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The subscription of a deployment that does not configure one (DESIGN.md §2).
pub const DEFAULT_SUBSCRIPTION_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The resource group that holds every network watcher (DESIGN.md §2).
pub const NETWORK_WATCHER_RESOURCE_GROUP: &str = "NetworkWatcherRG";
/// A network watcher's name is this prefix and its location (`NetworkWatcher_westus2`).
pub const NETWORK_WATCHER_NAME_PREFIX: &str = "NetworkWatcher_";
/// The VM extension name of the agent on Linux hosts (DESIGN.md §2).
pub const AGENT_EXTENSION_NAME: &str = "NetworkWatcherAgentLinux";

/// Longest [`ResourceName`], in characters (DESIGN.md §2).
const NAME_MAX: usize = 80;
/// Longest [`ResourceGroupName`], in characters (Azure's naming rules).
const RESOURCE_GROUP_MAX: usize = 90;
/// Longest [`Location`]: the watcher name `NetworkWatcher_{location}` must stay
/// a valid name (15 + 64 < 80); Azure's longest region name has 18 characters.
const LOCATION_MAX: usize = 64;

/// The rule of [`ResourceName`], as error messages state it.
const NAME_RULE: &str = r#"names are 1-80 characters: letters, digits, "_", "-" and ".", starting with a letter or digit and not ending with ".""#;
/// The rule of [`ResourceGroupName`], as error messages state it.
const RESOURCE_GROUP_RULE: &str =
    r#"resource group names are 1-90 characters: letters, digits, "_", "-", ".", "(" and ")", not ending with ".""#;
/// The shape of an id, as error messages show it.
const ID_SHAPE: &str = "/subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}/{type}/{name}";

const SUBSCRIPTIONS: &str = "subscriptions";
const RESOURCE_GROUPS: &str = "resourceGroups";
const PROVIDERS: &str = "providers";

/// A name, id, resource type or location rejected: the client's fault.
///
/// `message` starts with `target`, so it reads alone (as [`crate::filter::FilterError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResourceError {
    /// Which kind of value was rejected (picks the ARM error code).
    pub kind: ResourceErrorKind,
    /// The field or parameter, e.g. `packetCaptureName` or `properties.target`.
    pub target: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// What a [`ResourceError`] rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceErrorKind {
    /// A [`ResourceName`].
    Name,
    /// A [`ResourceGroupName`].
    ResourceGroup,
    /// A [`SubscriptionId`].
    Subscription,
    /// A [`ResourceType`].
    ResourceType,
    /// A [`ResourceId`] that does not parse (any part of it).
    Id,
    /// A valid [`ResourceId`] of a kind the field does not take.
    WrongKind,
    /// A [`Location`].
    Location,
}

impl ResourceError {
    fn new(kind: ResourceErrorKind, target: &str, detail: &str) -> Self {
        Self {
            kind,
            target: target.to_owned(),
            message: format!("{target} {detail}"),
        }
    }
}

/// The characters of `s` in lower case: what names are compared by.
fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
}

fn eq_folded(a: &str, b: &str) -> bool {
    folded(a).eq(folded(b))
}

fn hash_folded<H: Hasher>(s: &str, state: &mut H) {
    for c in folded(s) {
        c.hash(state);
    }
    // A terminator keeps ("ab", "c") and ("a", "bc") apart in composite keys.
    0xff_u8.hash(state);
}

/// The impls every string newtype here shares: case-insensitive `==`/`Hash`,
/// `Display`, `FromStr` and serde as a string (both with `$target` as the
/// error's target, as the caller's field is unknown there).
macro_rules! string_newtype {
    ($name:ident, $target:literal) => {
        impl $name {
            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                eq_folded(&self.0, &other.0)
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                hash_folded(&self.0, state);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ResourceError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse($target, text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse($target, &text).map_err(D::Error::custom)
            }
        }
    };
}

/// An ARM resource name: a VM, scale set, watcher, capture, extension or
/// storage account name (rule in the module doc).
#[derive(Debug, Clone)]
pub struct ResourceName(String);

string_newtype!(ResourceName, "name");

impl ResourceName {
    /// Parses `text` as the name in `target` (e.g. `packetCaptureName`).
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        match name_problem(text) {
            None => Ok(Self(text.to_owned())),
            Some(problem) => Err(ResourceError::new(
                ResourceErrorKind::Name,
                target,
                &format!("{text:?} is not a valid name: it {problem}; {NAME_RULE}"),
            )),
        }
    }

    /// A name this crate knows is valid (its tests check each one).
    fn known(text: &str) -> Self {
        debug_assert!(name_problem(text).is_none(), "{text}");
        Self(text.to_owned())
    }
}

/// What breaks [`ResourceName`]'s rule, as a verb phrase (`has the character ' '`).
fn name_problem(text: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let length = text.chars().count();
    let Some(first) = text.chars().next() else {
        return Some("is empty".to_owned());
    };
    if let Some(bad) = text.chars().find(|&c| !allowed(c)) {
        Some(format!("has the character {bad:?}"))
    } else if length > NAME_MAX {
        Some(format!("is {length} characters long"))
    } else if !first.is_ascii_alphanumeric() {
        Some(format!("starts with {first:?}"))
    } else if text.ends_with('.') {
        Some("ends with '.'".to_owned())
    } else {
        None
    }
}

/// An ARM resource group name (rule in the module doc).
#[derive(Debug, Clone)]
pub struct ResourceGroupName(String);

string_newtype!(ResourceGroupName, "resourceGroupName");

impl ResourceGroupName {
    /// Parses `text` as the resource group in `target` (e.g. `resourceGroupName`).
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        match resource_group_problem(text) {
            None => Ok(Self(text.to_owned())),
            Some(problem) => Err(ResourceError::new(
                ResourceErrorKind::ResourceGroup,
                target,
                &format!("{text:?} is not a valid resource group name: it {problem}; {RESOURCE_GROUP_RULE}"),
            )),
        }
    }

    /// `NetworkWatcherRG`, where every network watcher lives.
    pub fn network_watchers() -> Self {
        Self(NETWORK_WATCHER_RESOURCE_GROUP.to_owned())
    }
}

fn resource_group_problem(text: &str) -> Option<String> {
    let length = text.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')');
    if text.is_empty() {
        Some("is empty".to_owned())
    } else if let Some(bad) = text.chars().find(|&c| !allowed(c)) {
        Some(format!("has the character {bad:?}"))
    } else if length > RESOURCE_GROUP_MAX {
        Some(format!("is {length} characters long"))
    } else if text.ends_with('.') {
        Some("ends with '.'".to_owned())
    } else {
        None
    }
}

/// A subscription id: a GUID, kept as written, compared in any case.
#[derive(Debug, Clone)]
pub struct SubscriptionId(String);

string_newtype!(SubscriptionId, "subscriptionId");

impl SubscriptionId {
    /// Parses `text` as the subscription id in `target`.
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        if is_guid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ResourceError::new(
                ResourceErrorKind::Subscription,
                target,
                &format!(
                    "{text:?} is not a valid subscription id: subscription ids are GUIDs such as {DEFAULT_SUBSCRIPTION_ID}"
                ),
            ))
        }
    }

    /// [`DEFAULT_SUBSCRIPTION_ID`].
    pub fn default_subscription() -> Self {
        Self(DEFAULT_SUBSCRIPTION_ID.to_owned())
    }
}

/// Whether `text` is `8-4-4-4-12` hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A location (Azure region) in canonical form: lower-case ASCII letters and
/// digits, e.g. `westus2`.
#[derive(Debug, Clone)]
pub struct Location(String);

string_newtype!(Location, "location");

impl Location {
    /// Parses `text` as the location in `target`: a name (`westus2`) or a
    /// display name (`West US 2`), in any case.
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        let canonical: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let problem = if canonical.is_empty() {
            Some("is empty".to_owned())
        } else if let Some(bad) = canonical.chars().find(|c| !c.is_ascii_alphanumeric()) {
            Some(format!("has the character {bad:?}"))
        } else if canonical.len() > LOCATION_MAX {
            Some(format!("is longer than {LOCATION_MAX} characters"))
        } else {
            None
        };
        match problem {
            None => Ok(Self(canonical)),
            Some(problem) => Err(ResourceError::new(
                ResourceErrorKind::Location,
                target,
                &format!(
                    "{text:?} is not a valid location: it {problem}; locations are letters and digits \
                     such as \"westus2\" (or a display name such as \"West US 2\")"
                ),
            )),
        }
    }

    /// The name of this location's network watcher, `NetworkWatcher_{location}`.
    pub fn network_watcher_name(&self) -> ResourceName {
        ResourceName::known(&format!("{NETWORK_WATCHER_NAME_PREFIX}{}", self.0))
    }

    /// The location a watcher named `NetworkWatcher_{location}` is for (the
    /// prefix in any case), `None` for any other name.
    pub fn from_network_watcher_name(name: &ResourceName) -> Option<Self> {
        let text = name.as_str();
        let prefix = text.get(..NETWORK_WATCHER_NAME_PREFIX.len())?;
        if !prefix.eq_ignore_ascii_case(NETWORK_WATCHER_NAME_PREFIX) {
            return None;
        }
        Self::parse("name", &text[NETWORK_WATCHER_NAME_PREFIX.len()..]).ok()
    }
}

/// A resource type: a provider namespace and one or more type names,
/// `Microsoft.Compute/virtualMachines/extensions`. Compared in any case.
#[derive(Debug, Clone)]
pub struct ResourceType {
    namespace: String,
    types: Vec<String>,
}

impl ResourceType {
    /// Parses `text` as the resource type in `target`.
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        let mut parts = text.split('/');
        let namespace = parts.next().unwrap_or_default();
        let types: Vec<&str> = parts.collect();
        let problem = if !is_namespace(namespace) {
            Some(format!(
                "{namespace:?} is not a provider namespace such as Microsoft.Compute"
            ))
        } else if types.is_empty() {
            Some("it has no type after the namespace".to_owned())
        } else {
            types
                .iter()
                .find(|t| !is_type_name(t))
                .map(|t| format!("{t:?} is not a type name such as virtualMachines"))
        };
        if let Some(problem) = problem {
            let detail = format!(
                "{text:?} is not a valid resource type: {problem}; types look like Microsoft.Compute/virtualMachines"
            );
            return Err(ResourceError::new(ResourceErrorKind::ResourceType, target, &detail));
        }
        Ok(canonical_type(namespace, &types))
    }

    /// The provider namespace, e.g. `Microsoft.Compute`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The type names after the namespace, e.g. `["virtualMachines", "extensions"]`.
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// The kind of resource this type is.
    pub fn kind(&self) -> ResourceKind {
        let types: Vec<&str> = self.types.iter().map(String::as_str).collect();
        kind_of(&self.namespace, &types).map_or(ResourceKind::Other, |spec| spec.kind)
    }
}

impl PartialEq for ResourceType {
    fn eq(&self, other: &Self) -> bool {
        self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}

impl Eq for ResourceType {}

impl Hash for ResourceType {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_folded(&self.namespace, state);
        for t in &self.types {
            hash_folded(t, state);
        }
    }
}

/// `Microsoft.Compute/virtualMachines/extensions`.
impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.namespace)?;
        for t in &self.types {
            write!(f, "/{t}")?;
        }
        Ok(())
    }
}

/// `Microsoft.Compute`: dot-separated words of ASCII letters and digits.
fn is_namespace(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `virtualMachines`: ASCII letters and digits.
fn is_type_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The kinds of resource netwatch serves (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `Microsoft.Compute/virtualMachines`: a host running the agent.
    VirtualMachine,
    /// `Microsoft.Compute/virtualMachines/extensions`: the agent, as a VM extension.
    VmExtension,
    /// `Microsoft.Compute/virtualMachineScaleSets`: a named group of hosts.
    ScaleSet,
    /// `Microsoft.Compute/virtualMachineScaleSets/virtualMachines`: one host
    /// of a scale set, named by its instance id (`0`, `1`, …).
    ScaleSetVm,
    /// `Microsoft.Network/networkWatchers`: one per location.
    NetworkWatcher,
    /// `Microsoft.Network/networkWatchers/packetCaptures`.
    PacketCapture,
    /// `Microsoft.Storage/storageAccounts`: a configured storage backend.
    StorageAccount,
    /// `Microsoft.Network/networkWatchers/netwatchFlightRecorders`: hosts'
    /// always-on recording of recent traffic (netwatch's own).
    FlightRecorder,
    /// `Microsoft.Network/networkWatchers/netwatchTriggers`: alerts that
    /// start captures (netwatch's own).
    Trigger,
    /// Any other type: parsed and kept, never served.
    Other,
}

/// How a [`ResourceKind`] is spelled.
#[derive(Debug)]
struct KindSpec {
    kind: ResourceKind,
    namespace: &'static str,
    types: &'static [&'static str],
    /// What messages call it.
    noun: &'static str,
    /// Placeholders of its names in [`ResourceKind::id_template`].
    placeholders: &'static [&'static str],
}

const VIRTUAL_MACHINE: KindSpec = KindSpec {
    kind: ResourceKind::VirtualMachine,
    namespace: "Microsoft.Compute",
    types: &["virtualMachines"],
    noun: "virtual machine",
    placeholders: &["{vm}"],
};
const VM_EXTENSION: KindSpec = KindSpec {
    kind: ResourceKind::VmExtension,
    namespace: "Microsoft.Compute",
    types: &["virtualMachines", "extensions"],
    noun: "VM extension",
    placeholders: &["{vm}", "{extension}"],
};
const SCALE_SET: KindSpec = KindSpec {
    kind: ResourceKind::ScaleSet,
    namespace: "Microsoft.Compute",
    types: &["virtualMachineScaleSets"],
    noun: "scale set",
    placeholders: &["{vmss}"],
};
const SCALE_SET_VM: KindSpec = KindSpec {
    kind: ResourceKind::ScaleSetVm,
    namespace: "Microsoft.Compute",
    types: &["virtualMachineScaleSets", "virtualMachines"],
    noun: "scale-set instance",
    placeholders: &["{vmss}", "{instance}"],
};
const NETWORK_WATCHER: KindSpec = KindSpec {
    kind: ResourceKind::NetworkWatcher,
    namespace: "Microsoft.Network",
    types: &["networkWatchers"],
    noun: "network watcher",
    placeholders: &["{watcher}"],
};
const PACKET_CAPTURE: KindSpec = KindSpec {
    kind: ResourceKind::PacketCapture,
    namespace: "Microsoft.Network",
    types: &["networkWatchers", "packetCaptures"],
    noun: "packet capture",
    placeholders: &["{watcher}", "{capture}"],
};
const STORAGE_ACCOUNT: KindSpec = KindSpec {
    kind: ResourceKind::StorageAccount,
    namespace: "Microsoft.Storage",
    types: &["storageAccounts"],
    noun: "storage account",
    placeholders: &["{account}"],
};
const FLIGHT_RECORDER: KindSpec = KindSpec {
    kind: ResourceKind::FlightRecorder,
    namespace: "Microsoft.Network",
    types: &["networkWatchers", "netwatchFlightRecorders"],
    noun: "flight recorder",
    placeholders: &["{watcher}", "{recorder}"],
};
const TRIGGER: KindSpec = KindSpec {
    kind: ResourceKind::Trigger,
    namespace: "Microsoft.Network",
    types: &["networkWatchers", "netwatchTriggers"],
    noun: "trigger",
    placeholders: &["{watcher}", "{trigger}"],
};
const KINDS: [&KindSpec; 9] = [
    &VIRTUAL_MACHINE,
    &VM_EXTENSION,
    &SCALE_SET,
    &SCALE_SET_VM,
    &NETWORK_WATCHER,
    &PACKET_CAPTURE,
    &STORAGE_ACCOUNT,
    &FLIGHT_RECORDER,
    &TRIGGER,
];

/// The known kind with this namespace and these types, in any case.
fn kind_of(namespace: &str, types: &[&str]) -> Option<&'static KindSpec> {
    KINDS.into_iter().find(|spec| {
        spec.namespace.eq_ignore_ascii_case(namespace)
            && spec.types.len() == types.len()
            && spec.types.iter().zip(types).all(|(a, b)| a.eq_ignore_ascii_case(b))
    })
}

fn spec(kind: ResourceKind) -> Option<&'static KindSpec> {
    KINDS.into_iter().find(|spec| spec.kind == kind)
}

/// The type, in canonical spelling when it is a known kind.
fn canonical_type(namespace: &str, types: &[&str]) -> ResourceType {
    match kind_of(namespace, types) {
        Some(spec) => ResourceType {
            namespace: spec.namespace.to_owned(),
            types: spec.types.iter().map(|t| (*t).to_owned()).collect(),
        },
        None => ResourceType {
            namespace: namespace.to_owned(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
        },
    }
}

impl ResourceKind {
    /// What messages call it: `virtual machine`, `scale set`, … (`resource` for [`ResourceKind::Other`]).
    pub fn noun(self) -> &'static str {
        spec(self).map_or("resource", |spec| spec.noun)
    }

    /// Its resource type in canonical spelling, `None` for [`ResourceKind::Other`].
    pub fn resource_type(self) -> Option<ResourceType> {
        spec(self).map(|spec| canonical_type(spec.namespace, spec.types))
    }

    /// Its id with placeholders, for messages:
    /// `/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{vm}`.
    pub fn id_template(self) -> String {
        let Some(spec) = spec(self) else {
            return ID_SHAPE.to_owned();
        };
        let mut id = format!(
            "/{SUBSCRIPTIONS}/{{subscription}}/{RESOURCE_GROUPS}/{{group}}/{PROVIDERS}/{}",
            spec.namespace
        );
        for (t, name) in spec.types.iter().zip(spec.placeholders) {
            id.push_str(&format!("/{t}/{name}"));
        }
        id
    }
}

/// An ARM resource id in a resource group (module doc for the syntax).
///
/// `==` and `Hash` ignore case; `Display` writes the fixed segments and known
/// types canonically and names as parsed.
#[derive(Debug, Clone)]
pub struct ResourceId {
    subscription: SubscriptionId,
    resource_group: ResourceGroupName,
    resource_type: ResourceType,
    /// One name per type of `resource_type`.
    names: Vec<ResourceName>,
}

impl ResourceId {
    /// Parses `text` as the id in `target` (e.g. `properties.target`).
    pub fn parse(target: &str, text: &str) -> Result<Self, ResourceError> {
        parse_id(text).map_err(|detail| {
            ResourceError::new(
                ResourceErrorKind::Id,
                target,
                &format!("{text:?} is not a valid resource id: {detail}"),
            )
        })
    }

    /// Parses `text` as the id in `target`, which must be of one of `kinds`:
    /// ``properties.target "…" is a storage account id, but it must be a virtual
    /// machine or scale set id: /subscriptions/…``.
    pub fn parse_kind(target: &str, text: &str, kinds: &[ResourceKind]) -> Result<Self, ResourceError> {
        let id = Self::parse(target, text)?;
        if kinds.contains(&id.kind()) {
            return Ok(id);
        }
        let is = match id.kind() {
            ResourceKind::Other => format!("a {} id", id.resource_type()),
            kind => format!("a {} id", kind.noun()),
        };
        let nouns: Vec<&str> = kinds.iter().map(|kind| kind.noun()).collect();
        let templates: Vec<String> = kinds.iter().map(|kind| kind.id_template()).collect();
        let detail = format!(
            "{text:?} is {is}, but it must be a {} id: {}",
            nouns.join(" or "),
            templates.join(" or ")
        );
        Err(ResourceError::new(ResourceErrorKind::WrongKind, target, &detail))
    }

    /// A known kind's id from its names, outermost first (one per type of `spec`).
    fn known(
        spec: &KindSpec,
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        names: &[&ResourceName],
    ) -> Self {
        debug_assert_eq!(spec.types.len(), names.len());
        Self {
            subscription: subscription.clone(),
            resource_group: group.clone(),
            resource_type: canonical_type(spec.namespace, spec.types),
            names: names.iter().map(|name| (*name).clone()).collect(),
        }
    }

    /// `…/providers/Microsoft.Compute/virtualMachines/{vm}`.
    pub fn virtual_machine(subscription: &SubscriptionId, group: &ResourceGroupName, vm: &ResourceName) -> Self {
        Self::known(&VIRTUAL_MACHINE, subscription, group, &[vm])
    }

    /// `…/virtualMachines/{vm}/extensions/{extension}`.
    pub fn vm_extension(
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        vm: &ResourceName,
        extension: &ResourceName,
    ) -> Self {
        Self::known(&VM_EXTENSION, subscription, group, &[vm, extension])
    }

    /// `…/virtualMachines/{vm}/extensions/NetworkWatcherAgentLinux`: the agent of `vm`.
    pub fn agent_extension(subscription: &SubscriptionId, group: &ResourceGroupName, vm: &ResourceName) -> Self {
        Self::vm_extension(subscription, group, vm, &ResourceName::known(AGENT_EXTENSION_NAME))
    }

    /// `…/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}`.
    pub fn scale_set(subscription: &SubscriptionId, group: &ResourceGroupName, vmss: &ResourceName) -> Self {
        Self::known(&SCALE_SET, subscription, group, &[vmss])
    }

    /// `…/virtualMachineScaleSets/{vmss}/virtualMachines/{instance}`: one host of a scale set.
    pub fn scale_set_vm(
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        vmss: &ResourceName,
        instance: u32,
    ) -> Self {
        let instance = ResourceName(instance.to_string());
        Self::known(&SCALE_SET_VM, subscription, group, &[vmss, &instance])
    }

    /// `…/providers/Microsoft.Network/networkWatchers/{watcher}`.
    pub fn network_watcher(subscription: &SubscriptionId, group: &ResourceGroupName, watcher: &ResourceName) -> Self {
        Self::known(&NETWORK_WATCHER, subscription, group, &[watcher])
    }

    /// The watcher of `location`: `NetworkWatcher_{location}` in `NetworkWatcherRG`.
    pub fn network_watcher_for(subscription: &SubscriptionId, location: &Location) -> Self {
        let group = ResourceGroupName::network_watchers();
        Self::network_watcher(subscription, &group, &location.network_watcher_name())
    }

    /// `…/networkWatchers/{watcher}/packetCaptures/{capture}`.
    pub fn packet_capture(
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        watcher: &ResourceName,
        capture: &ResourceName,
    ) -> Self {
        Self::known(&PACKET_CAPTURE, subscription, group, &[watcher, capture])
    }

    /// `…/networkWatchers/{watcher}/netwatchFlightRecorders/{recorder}`.
    pub fn flight_recorder(
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        watcher: &ResourceName,
        recorder: &ResourceName,
    ) -> Self {
        Self::known(&FLIGHT_RECORDER, subscription, group, &[watcher, recorder])
    }

    /// `…/networkWatchers/{watcher}/netwatchTriggers/{trigger}`.
    pub fn trigger(
        subscription: &SubscriptionId,
        group: &ResourceGroupName,
        watcher: &ResourceName,
        trigger: &ResourceName,
    ) -> Self {
        Self::known(&TRIGGER, subscription, group, &[watcher, trigger])
    }

    /// `…/providers/Microsoft.Storage/storageAccounts/{account}`.
    pub fn storage_account(subscription: &SubscriptionId, group: &ResourceGroupName, account: &ResourceName) -> Self {
        Self::known(&STORAGE_ACCOUNT, subscription, group, &[account])
    }

    /// The subscription.
    pub fn subscription(&self) -> &SubscriptionId {
        &self.subscription
    }

    /// The resource group.
    pub fn resource_group(&self) -> &ResourceGroupName {
        &self.resource_group
    }

    /// The resource type, e.g. `Microsoft.Network/networkWatchers/packetCaptures`.
    pub fn resource_type(&self) -> &ResourceType {
        &self.resource_type
    }

    /// Which kind of resource this is.
    pub fn kind(&self) -> ResourceKind {
        self.resource_type.kind()
    }

    /// The resource's own name (the last one).
    pub fn name(&self) -> &ResourceName {
        self.names
            .last()
            .expect("parse and the constructors give every id a name")
    }

    /// Every name, outermost first: `[watcher, capture]` for a packet capture.
    pub fn names(&self) -> &[ResourceName] {
        &self.names
    }

    /// The parent resource (the VM of an extension, the watcher of a capture);
    /// `None` for a top-level resource.
    pub fn parent(&self) -> Option<Self> {
        let depth = self.names.len().checked_sub(1).filter(|&d| d > 0)?;
        let types: Vec<&str> = self.resource_type.types[..depth].iter().map(String::as_str).collect();
        Some(Self {
            subscription: self.subscription.clone(),
            resource_group: self.resource_group.clone(),
            resource_type: canonical_type(&self.resource_type.namespace, &types),
            names: self.names[..depth].to_vec(),
        })
    }

    /// The id in lower case: one spelling per resource, to store and index by.
    pub fn key(&self) -> String {
        folded(&self.to_string()).collect()
    }
}

fn parse_id(text: &str) -> Result<ResourceId, String> {
    if !text.starts_with('/') {
        return Err(format!("it must start with /{SUBSCRIPTIONS}/, as in {ID_SHAPE}"));
    }
    let mut segments = text.split('/').filter(|s| !s.is_empty());
    fixed(segments.next(), SUBSCRIPTIONS, "at the start")?;
    let subscription = segments
        .next()
        .ok_or_else(|| format!("it has no subscription id; ids look like {ID_SHAPE}"))?;
    let subscription = SubscriptionId::parse("", subscription)
        .map_err(|_| format!("its subscription id {subscription:?} is not a GUID such as {DEFAULT_SUBSCRIPTION_ID}"))?;
    fixed(segments.next(), RESOURCE_GROUPS, "after the subscription id")?;
    let group = segments
        .next()
        .ok_or_else(|| format!("it has no resource group; ids look like {ID_SHAPE}"))?;
    if let Some(problem) = resource_group_problem(group) {
        return Err(format!("its resource group {group:?} {problem}; {RESOURCE_GROUP_RULE}"));
    }
    let group = ResourceGroupName(group.to_owned());
    fixed(segments.next(), PROVIDERS, "after the resource group")?;
    let namespace = segments
        .next()
        .ok_or_else(|| format!("it has no provider namespace; ids look like {ID_SHAPE}"))?;
    if !is_namespace(namespace) {
        return Err(format!(
            "{namespace:?} is not a provider namespace such as Microsoft.Compute"
        ));
    }
    let mut types = Vec::new();
    let mut names = Vec::new();
    while let Some(t) = segments.next() {
        if !is_type_name(t) {
            return Err(format!("{t:?} is not a resource type such as virtualMachines"));
        }
        let name = segments
            .next()
            .ok_or_else(|| format!("its last type {t:?} has no name after it"))?;
        if let Some(problem) = name_problem(name) {
            return Err(format!("its name {name:?} {problem}; {NAME_RULE}"));
        }
        types.push(t);
        names.push(ResourceName(name.to_owned()));
    }
    if types.is_empty() {
        return Err(format!(
            "it names no resource after {namespace:?}; ids look like {ID_SHAPE}"
        ));
    }
    Ok(ResourceId {
        subscription,
        resource_group: group,
        resource_type: canonical_type(namespace, &types),
        names,
    })
}

/// Checks a fixed segment, `word` in any case.
fn fixed(segment: Option<&str>, word: &str, place: &str) -> Result<(), String> {
    match segment {
        Some(segment) if segment.eq_ignore_ascii_case(word) => Ok(()),
        Some(segment) => Err(format!(
            "expected {word:?} {place}, found {segment:?}; ids look like {ID_SHAPE}"
        )),
        None => Err(format!("it has no {word:?} {place}; ids look like {ID_SHAPE}")),
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.subscription == other.subscription
            && self.resource_group == other.resource_group
            && self.resource_type == other.resource_type
            && self.names == other.names
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.subscription.hash(state);
        self.resource_group.hash(state);
        self.resource_type.hash(state);
        self.names.hash(state);
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/{SUBSCRIPTIONS}/{}/{RESOURCE_GROUPS}/{}/{PROVIDERS}/{}",
            self.subscription, self.resource_group, self.resource_type.namespace
        )?;
        for (t, name) in self.resource_type.types.iter().zip(&self.names) {
            write!(f, "/{t}/{name}")?;
        }
        Ok(())
    }
}

impl FromStr for ResourceId {
    type Err = ResourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse("id", text)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse("id", &text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, ErrorCode};
    use std::collections::HashSet;

    const SUB: &str = "00000000-0000-0000-0000-000000000000";

    fn sub() -> SubscriptionId {
        SubscriptionId::parse("sub", SUB).unwrap()
    }

    fn rg(name: &str) -> ResourceGroupName {
        ResourceGroupName::parse("rg", name).unwrap()
    }

    fn name(text: &str) -> ResourceName {
        ResourceName::parse("name", text).unwrap()
    }

    fn id(text: &str) -> ResourceId {
        ResourceId::parse("id", text).unwrap()
    }

    fn vm_id() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1")
    }

    #[test]
    fn bad_names_say_the_field_and_the_rule() {
        #[rustfmt::skip]
        let rows: &[(&str, &str)] = &[
            ("", r#"packetCaptureName "" is not a valid name: it is empty; names are 1-80 characters: letters, digits, "_", "-" and ".", starting with a letter or digit and not ending with ".""#),
            ("pc 1", r#"packetCaptureName "pc 1" is not a valid name: it has the character ' '; names are"#),
            ("pc/1", r#"packetCaptureName "pc/1" is not a valid name: it has the character '/'"#),
            ("pc#1", r#"it has the character '#'"#),
            ("café", r#"it has the character 'é'"#),
            ("pc1.", r#"packetCaptureName "pc1." is not a valid name: it ends with '.'"#),
            ("-pc1", r#"packetCaptureName "-pc1" is not a valid name: it starts with '-'"#),
            ("_pc1", r#"it starts with '_'"#),
            (".pc1", r#"it starts with '.'"#),
        ];
        for &(text, message) in rows {
            let err = ResourceName::parse("packetCaptureName", text).unwrap_err();
            assert_eq!(err.kind, ResourceErrorKind::Name, "{text}");
            assert_eq!(err.target, "packetCaptureName", "{text}");
            assert!(err.message.contains(message), "{text}: {}", err.message);
            let api = ApiError::from(err.clone());
            assert_eq!(
                (api.status(), api.code()),
                (400, ErrorCode::InvalidResourceName),
                "{text}"
            );
            assert_eq!(
                (api.target(), api.message()),
                (Some("packetCaptureName"), err.message.as_str())
            );
        }
        let long = "a".repeat(81);
        let err = ResourceName::parse("name", &long).unwrap_err();
        assert!(
            err.message.contains("it is 81 characters long; names are 1-80"),
            "{}",
            err.message
        );
    }

    #[test]
    fn good_names() {
        for text in [
            "a",
            "0",
            "pc1",
            "NetworkWatcher_westus2",
            "my-capture.v2",
            "x_",
            "a-",
            &"a".repeat(80),
        ] {
            let parsed = name(text);
            assert_eq!(parsed.as_str(), text);
            assert_eq!(parsed.to_string(), text);
        }
        // Case-insensitive equality and hashing, casing kept.
        assert_eq!(name("PC1"), name("pc1"));
        let set: HashSet<ResourceName> = [name("PC1"), name("pc1")].into();
        assert_eq!(set.len(), 1);
        assert_ne!(name("pc1"), name("pc2"));
        assert_eq!("vm1".parse::<ResourceName>().unwrap(), name("VM1"));
        let json: ResourceName = serde_json::from_str(r#""Pc1""#).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), r#""Pc1""#);
        let err = serde_json::from_str::<ResourceName>(r#""a b""#).unwrap_err();
        assert!(
            err.to_string().starts_with(r#"name "a b" is not a valid name"#),
            "{err}"
        );
    }

    #[test]
    fn resource_groups_and_subscriptions() {
        for text in ["rg1", "NetworkWatcherRG", "my_rg-(prod).1", "grüppe", &"r".repeat(90)] {
            assert_eq!(rg(text).as_str(), text);
        }
        assert_eq!(rg("RG1"), rg("rg1"));
        assert_eq!(
            ResourceGroupName::network_watchers().as_str(),
            NETWORK_WATCHER_RESOURCE_GROUP
        );
        #[rustfmt::skip]
        let rows: &[(&str, &str)] = &[
            ("", r#"resourceGroupName "" is not a valid resource group name: it is empty; resource group names are 1-90"#),
            ("rg.", r#"resourceGroupName "rg." is not a valid resource group name: it ends with '.'"#),
            ("rg 1", "it has the character ' '"),
            ("rg/1", "it has the character '/'"),
        ];
        for &(text, message) in rows {
            let err = ResourceGroupName::parse("resourceGroupName", text).unwrap_err();
            assert_eq!(
                (err.kind, err.target.as_str()),
                (ResourceErrorKind::ResourceGroup, "resourceGroupName")
            );
            assert!(err.message.contains(message), "{text}: {}", err.message);
        }
        let err = ResourceGroupName::parse("g", &"r".repeat(91)).unwrap_err();
        assert!(err.message.contains("it is 91 characters long"));

        for text in [SUB, "ABCDEF01-2345-6789-abcd-ef0123456789"] {
            assert_eq!(SubscriptionId::parse("s", text).unwrap().as_str(), text);
        }
        assert_eq!(
            SubscriptionId::parse("s", "ABCDEF01-2345-6789-ABCD-EF0123456789").unwrap(),
            SubscriptionId::parse("s", "abcdef01-2345-6789-abcd-ef0123456789").unwrap()
        );
        assert_eq!(SubscriptionId::default_subscription().as_str(), DEFAULT_SUBSCRIPTION_ID);
        for text in [
            "",
            "subid",
            "00000000-0000-0000-0000-00000000000",
            "0000000000000000000000000000000000000",
            "g0000000-0000-0000-0000-000000000000",
            "{00000000-0000-0000-0000-000000000000}",
        ] {
            let err = SubscriptionId::parse("subscriptionId", text).unwrap_err();
            assert_eq!(
                (err.kind, err.target.as_str()),
                (ResourceErrorKind::Subscription, "subscriptionId")
            );
            assert_eq!(
                err.message,
                format!(
                    "subscriptionId {text:?} is not a valid subscription id: subscription ids are GUIDs such as {SUB}"
                )
            );
        }
    }

    #[test]
    fn bad_ids_say_what_is_wrong() {
        let vm = vm_id();
        #[rustfmt::skip]
        let rows: Vec<(String, &str)> = vec![
            ("vm1".into(), r#"properties.target "vm1" is not a valid resource id: it must start with /subscriptions/, as in /subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}/{type}/{name}"#),
            ("".into(), "it must start with /subscriptions/"),
            ("subscriptions/x".into(), "it must start with /subscriptions/"),
            ("/".into(), r#"it has no "subscriptions" at the start"#),
            ("/subscription/x".into(), r#"expected "subscriptions" at the start, found "subscription""#),
            (format!("/subscriptions/{SUB}"), r#"it has no "resourceGroups" after the subscription id"#),
            ("/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1".into(),
             r#"its subscription id "subid" is not a GUID such as 00000000-0000-0000-0000-000000000000"#),
            (format!("/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers"),
             r#"expected "resourceGroups" after the subscription id, found "providers""#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg."), r#"its resource group "rg." ends with '.'; resource group names are 1-90"#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1"), r#"it has no "providers" after the resource group"#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/provider/Microsoft.Compute"), r#"expected "providers" after the resource group, found "provider""#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers"), "it has no provider namespace"),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft..Compute/virtualMachines/vm1"), r#""Microsoft..Compute" is not a provider namespace such as Microsoft.Compute"#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute"), r#"it names no resource after "Microsoft.Compute""#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines"), r#"its last type "virtualMachines" has no name after it"#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtual-machines/vm1"), r#""virtual-machines" is not a resource type such as virtualMachines"#),
            (format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm 1"), r#"its name "vm 1" has the character ' '; names are 1-80"#),
            (format!("{vm}/extensions"), r#"its last type "extensions" has no name after it"#),
            (format!("{vm}?api-version=2024-05-01"), r#"its name "vm1?api-version=2024-05-01" has the character '?'"#),
        ];
        assert!(rows.len() >= 15);
        for (text, message) in &rows {
            let err = ResourceId::parse("properties.target", text).unwrap_err();
            assert_eq!(err.kind, ResourceErrorKind::Id, "{text}");
            assert_eq!(err.target, "properties.target", "{text}");
            assert!(
                err.message
                    .starts_with(&format!("properties.target {text:?} is not a valid resource id: ")),
                "{}",
                err.message
            );
            assert!(err.message.contains(message), "{text}: {}", err.message);
            let api = ApiError::from(err.clone());
            assert_eq!(
                (api.status(), api.code()),
                (400, ErrorCode::LinkedInvalidPropertyId),
                "{text}"
            );
            assert_eq!(
                (api.target(), api.message()),
                (Some("properties.target"), err.message.as_str())
            );
        }
    }

    #[test]
    fn ids_parse_case_insensitively_and_keep_names() {
        // az sends `resourcegroups`; `//` collapses; known types get their canonical spelling.
        let parsed = id(&format!(
            "//SUBSCRIPTIONS/{SUB}/resourcegroups/MyRG//Providers/microsoft.compute/VIRTUALMACHINES/MyVm/"
        ));
        assert_eq!(parsed.kind(), ResourceKind::VirtualMachine);
        assert_eq!(
            parsed.to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/MyRG/providers/Microsoft.Compute/virtualMachines/MyVm")
        );
        assert_eq!(parsed.subscription().as_str(), SUB);
        assert_eq!(parsed.resource_group().as_str(), "MyRG");
        assert_eq!(parsed.name().as_str(), "MyVm");
        assert_eq!(parsed, ResourceId::virtual_machine(&sub(), &rg("myrg"), &name("MYVM")));
        assert_eq!(
            parsed.key(),
            format!("/subscriptions/{SUB}/resourcegroups/myrg/providers/microsoft.compute/virtualmachines/myvm")
        );
        let set: HashSet<ResourceId> = [parsed.clone(), id(&parsed.key())].into();
        assert_eq!(set.len(), 1);

        // Unknown types parse, keep their spelling, and are `Other`.
        let other = id(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Contoso.Thing/widgets/w1/parts/p1"
        ));
        assert_eq!(other.kind(), ResourceKind::Other);
        assert_eq!(other.resource_type().to_string(), "Contoso.Thing/widgets/parts");
        assert_eq!(
            other.names().iter().map(ResourceName::as_str).collect::<Vec<_>>(),
            ["w1", "p1"]
        );
        assert_eq!(
            other.parent().unwrap().to_string(),
            format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Contoso.Thing/widgets/w1")
        );

        // FromStr, serde.
        let from_str: ResourceId = vm_id().parse().unwrap();
        assert_eq!(from_str, id(&vm_id()));
        let json = serde_json::to_string(&from_str).unwrap();
        assert_eq!(json, format!("{:?}", vm_id()));
        assert_eq!(serde_json::from_str::<ResourceId>(&json).unwrap(), from_str);
        assert!(serde_json::from_str::<ResourceId>(r#""vm1""#).is_err());
    }

    #[test]
    fn typed_constructors_match_design() {
        let (s, g) = (sub(), rg("rg1"));
        let prefix = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers");
        let rows = [
            (
                ResourceId::virtual_machine(&s, &g, &name("vm1")),
                ResourceKind::VirtualMachine,
                format!("{prefix}/Microsoft.Compute/virtualMachines/vm1"),
            ),
            (
                ResourceId::vm_extension(&s, &g, &name("vm1"), &name("ext")),
                ResourceKind::VmExtension,
                format!("{prefix}/Microsoft.Compute/virtualMachines/vm1/extensions/ext"),
            ),
            (
                ResourceId::agent_extension(&s, &g, &name("vm1")),
                ResourceKind::VmExtension,
                format!("{prefix}/Microsoft.Compute/virtualMachines/vm1/extensions/NetworkWatcherAgentLinux"),
            ),
            (
                ResourceId::scale_set(&s, &g, &name("ss1")),
                ResourceKind::ScaleSet,
                format!("{prefix}/Microsoft.Compute/virtualMachineScaleSets/ss1"),
            ),
            (
                ResourceId::network_watcher(&s, &g, &name("nw1")),
                ResourceKind::NetworkWatcher,
                format!("{prefix}/Microsoft.Network/networkWatchers/nw1"),
            ),
            (
                ResourceId::packet_capture(&s, &g, &name("nw1"), &name("pc1")),
                ResourceKind::PacketCapture,
                format!("{prefix}/Microsoft.Network/networkWatchers/nw1/packetCaptures/pc1"),
            ),
            (
                ResourceId::storage_account(&s, &g, &name("acct")),
                ResourceKind::StorageAccount,
                format!("{prefix}/Microsoft.Storage/storageAccounts/acct"),
            ),
        ];
        for (built, kind, text) in rows {
            assert_eq!(built.kind(), kind, "{text}");
            assert_eq!(built.to_string(), text);
            let parsed = id(&text);
            assert_eq!(parsed, built);
            assert_eq!(parsed.kind(), kind);
            assert_eq!(kind.resource_type().unwrap(), *built.resource_type());
        }
        let capture = ResourceId::packet_capture(&s, &g, &name("nw1"), &name("pc1"));
        let watcher = capture.parent().unwrap();
        assert_eq!(watcher.kind(), ResourceKind::NetworkWatcher);
        assert_eq!(watcher.name().as_str(), "nw1");
        assert_eq!(watcher.parent(), None);
        assert_eq!(
            ResourceId::agent_extension(&s, &g, &name("vm1"))
                .parent()
                .unwrap()
                .kind(),
            ResourceKind::VirtualMachine
        );
    }

    #[test]
    fn ids_of_the_wrong_kind_say_which_is_right() {
        let storage =
            format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct");
        let targets = [ResourceKind::VirtualMachine, ResourceKind::ScaleSet];
        let err = ResourceId::parse_kind("properties.target", &storage, &targets).unwrap_err();
        assert_eq!(
            (err.kind, err.target.as_str()),
            (ResourceErrorKind::WrongKind, "properties.target")
        );
        assert_eq!(
            err.message,
            format!(
                "properties.target {storage:?} is a storage account id, but it must be a virtual machine or scale set id: \
                 /subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Compute/virtualMachines/{{vm}} or \
                 /subscriptions/{{subscription}}/resourceGroups/{{group}}/providers/Microsoft.Compute/virtualMachineScaleSets/{{vmss}}"
            )
        );
        let instance = format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/0"
        );
        let err = ResourceId::parse_kind("properties.target", &instance, &targets).unwrap_err();
        assert!(
            err.message.contains("is a scale-set instance id, but it must be"),
            "{}",
            err.message
        );
        // A malformed id is an id error, not a kind error.
        let err = ResourceId::parse_kind("properties.target", "vm1", &targets).unwrap_err();
        assert_eq!(err.kind, ResourceErrorKind::Id);
        assert_eq!(
            ResourceId::parse_kind("t", &vm_id(), &targets).unwrap().kind(),
            ResourceKind::VirtualMachine
        );
    }

    #[test]
    fn resource_types_compare_in_any_case() {
        let canonical = ResourceType::parse("resourceType", "Microsoft.Compute/virtualMachines").unwrap();
        let lower = ResourceType::parse("resourceType", "microsoft.compute/virtualmachines").unwrap();
        assert_eq!(canonical, lower);
        assert_eq!(lower.to_string(), "Microsoft.Compute/virtualMachines");
        assert_eq!(lower.kind(), ResourceKind::VirtualMachine);
        assert_eq!(lower.namespace(), "Microsoft.Compute");
        assert_eq!(lower.types(), ["virtualMachines"]);
        let set: HashSet<ResourceType> = [canonical, lower].into();
        assert_eq!(set.len(), 1);
        let other = ResourceType::parse("t", "Contoso.Thing/Widgets").unwrap();
        assert_eq!(
            (other.kind(), other.to_string().as_str()),
            (ResourceKind::Other, "Contoso.Thing/Widgets")
        );
        assert_ne!(other, ResourceType::parse("t", "Contoso.Thing/Widgets/parts").unwrap());
        for (text, message) in [
            (
                "virtualMachines",
                r#"--resource-type "virtualMachines" is not a valid resource type: it has no type after the namespace; types look like Microsoft.Compute/virtualMachines"#,
            ),
            (
                "Microsoft.Compute/",
                r#"--resource-type "Microsoft.Compute/" is not a valid resource type: "" is not a type name such as virtualMachines; types look like Microsoft.Compute/virtualMachines"#,
            ),
            (
                "/virtualMachines",
                r#"--resource-type "/virtualMachines" is not a valid resource type: "" is not a provider namespace such as Microsoft.Compute; types look like Microsoft.Compute/virtualMachines"#,
            ),
        ] {
            let err = ResourceType::parse("--resource-type", text).unwrap_err();
            assert_eq!(
                (err.kind, err.target.as_str()),
                (ResourceErrorKind::ResourceType, "--resource-type")
            );
            assert_eq!(err.message, message);
        }
        assert_eq!(ResourceKind::Other.resource_type(), None);
        assert_eq!(ResourceKind::Other.noun(), "resource");
    }

    #[test]
    fn locations_are_canonical() {
        for (text, canonical) in [
            ("westus2", "westus2"),
            ("West US 2", "westus2"),
            ("WESTUS", "westus"),
            (" east us ", "eastus"),
            ("eastus2euap", "eastus2euap"),
        ] {
            let location = Location::parse("location", text).unwrap();
            assert_eq!(location.as_str(), canonical, "{text}");
        }
        assert_eq!(
            Location::parse("l", "West US").unwrap(),
            Location::parse("l", "westus").unwrap()
        );
        for (text, message) in [
            (
                "",
                r#"location "" is not a valid location: it is empty; locations are letters and digits such as "westus2" (or a display name such as "West US 2")"#,
            ),
            (
                "west_us",
                r#"location "west_us" is not a valid location: it has the character '_'"#,
            ),
            (
                "west-us",
                r#"location "west-us" is not a valid location: it has the character '-'"#,
            ),
        ] {
            let err = Location::parse("location", text).unwrap_err();
            assert_eq!(
                (err.kind, err.target.as_str()),
                (ResourceErrorKind::Location, "location")
            );
            assert!(err.message.starts_with(message), "{}", err.message);
        }
        assert!(
            Location::parse("l", &"a".repeat(65))
                .unwrap_err()
                .message
                .contains("longer than 64")
        );

        // The watcher of a location (DESIGN.md §2), and back.
        let location = Location::parse("location", "West US 2").unwrap();
        assert_eq!(location.network_watcher_name().as_str(), "NetworkWatcher_westus2");
        let longest = Location::parse("l", &"a".repeat(64)).unwrap();
        assert!(ResourceName::parse("n", longest.network_watcher_name().as_str()).is_ok());
        assert_eq!(
            ResourceId::network_watcher_for(&sub(), &location).to_string(),
            format!(
                "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus2"
            )
        );
        assert_eq!(
            Location::from_network_watcher_name(&name("networkwatcher_WestUS2")),
            Some(location)
        );
        assert_eq!(Location::from_network_watcher_name(&name("nw1")), None);
        assert_eq!(Location::from_network_watcher_name(&name("NetworkWatcher_")), None);
        assert!(ResourceName::parse("n", AGENT_EXTENSION_NAME).is_ok());
    }
}
