"""SMART App Launch 2.2 (https://hl7.org/fhir/smart-app-launch/): scopes and their enforcement, launch
context, smart-configuration and the CapabilityStatement."""
